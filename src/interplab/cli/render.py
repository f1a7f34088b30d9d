"""Terminal rendering for the CLI (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _tok(tokenizer, i: int) -> str:
    return repr(tokenizer.decode([i]))


def print_lens(model, result, console: Console | None = None) -> None:
    console = console or Console()
    tok = model.tokenizer
    c = result.config
    console.print(f"[bold]{model.source.get('name')}[/]  prompt: {c.prompt!r}  position {c.position}")
    probs = result.logits.softmax(-1)
    top = probs.topk(c.top_k)
    table = Table(title="Top next-token predictions")
    table.add_column("rank")
    table.add_column("token")
    table.add_column("prob", justify="right")
    for r, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
        table.add_row(str(r), _tok(tok, i), f"{p:.3f}")
    console.print(table)
    final = _tok(tok, result.final_id)
    lens = Table(title=f"Logit lens (resid_post of each layer → final norm → unembedding); final top-1 = {final}")
    lens.add_column("layer", justify="right")
    lens.add_column(f"p({final})", justify="right")
    lens.add_column(f"rank of {final}", justify="right")
    lens.add_column(f"top-{c.top_k} (prob)")
    for row, layer in enumerate(result.layers):
        tops = ", ".join(
            f"{_tok(tok, i)} {p:.2f}"
            for i, p in zip(result.top_ids[row].tolist(), result.top_probs[row].tolist())
        )
        lens.add_row(str(layer), f"{float(result.final_prob[row]):.3f}", str(int(result.final_rank[row])), tops)
    console.print(lens)


def print_models(rows, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="interplab models")
    for col in ("name", "description", "installed", "cached (safetensors)", "path / install"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["description"], "yes" if r["installed"] else "no",
                      "yes" if r["cached"] else "no", r.get("path") or r.get("install", ""))
    console.print(table)


def print_harvest(report, console: Console | None = None) -> None:
    console = console or Console()
    state = "complete" if report.complete else "INCOMPLETE (re-run the same command to resume)"
    console.print(f"[bold]activation store[/] {report.path}: {report.n_tokens:,} tokens in "
                  f"{report.n_shards} shards, {state}")
    console.print(f"this run: {report.shards_written} shards written, {report.shards_skipped} already there; "
                  f"{report.tokens_per_s:,.0f} tokens/s over {report.seconds:.1f} s; "
                  f"{report.bytes_per_token:,.0f} bytes/token on disk ({report.bytes_on_disk / 2**20:,.1f} MiB); "
                  f"content hash {report.content_hash[:16]}")


def print_eval(run_path, console: Console | None = None) -> None:
    import json

    console = console or Console()
    results = json.loads((run_path / "results.json").read_text())
    table = Table(title="dictionary evaluation (held-out text)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    intervals = results.get("intervals", {})
    for key, value in results["metrics"].items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        ci = intervals.get(key)
        table.add_row(key, shown, "" if ci is None else f"[{ci[0]:.4g}, {ci[1]:.4g}]")
    console.print(table)
    console.print(f"feature statistics: {results['features_dir']}")
    console.print(f"report: {run_path / 'report.html'}")
