"""Activation-patching sweep: interplab's batched resid_pre (layer × position) sweep against
TransformerLens 4's ``patching.get_act_patch_resid_pre`` (one forward per cell) on the same
model, prompts and metric, side by side in one process.

    python benchmarks/patching.py [--repeats 2] [--out benchmarks/results/patching.json]

Model: the default SmolLM2-135M (its safetensors cache, which TransformerLens boots from).
Prompts: one IOI pair, clean "When Mary and John went to the store, John gave a drink to" and
its ABC corruption; metric: logit(" Mary") − logit(" John") at the last position. Reports the
medians over interleaved repeats, the speed ratio, and the max abs difference of the two
(layer × position) grids. Also times interplab's own naive loop (one forward per cell) and the
sweep without prefix reuse, to show where the speed comes from.

FLOP rate: the sweep counts the FLOPs it needs (each row recomputes only its suffix of positions
through the blocks from its patched layer on, and one position's logits; ``runtime.flops``) and
the benchmark times, interleaved with the contenders, a plain batched forward of the model
(``model(input_ids)``, all logits) over as many tokens as the sweep's largest forward; it reports
the sweep's achieved rate (needed FLOPs / seconds) as a fraction of that forward's rate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import interplab
from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.runtime.flops import plain_forward_rate

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Alice and Bob went to the store, Charlie gave a drink to"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    ap.add_argument("--naive", action="store_true", help="also time interplab's naive loop")
    ap.add_argument("--out", default="benchmarks/results/patching.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = interplab.load("smollm2-135m")
    tok = model.tokenizer
    clean, corrupt = model.to_batch(CLEAN), model.to_batch(CORRUPT)
    assert clean.shape == corrupt.shape, (clean.shape, corrupt.shape)
    mary, john = tok(" Mary")["input_ids"][0], tok(" John")["input_ids"][0]
    ans, wrong = torch.tensor([mary]), torch.tensor([john])
    n_layers, n_pos = model.dims.n_layers, clean.shape[1]

    runs: dict[str, list[float]] = {"interplab": [], "interplab_no_prefix": []}
    grids: dict[str, torch.Tensor] = {}
    costs, plain = [], []

    def ours(reuse: bool):
        t = time.perf_counter()
        res = activation_patching(model, clean, corrupt, ans, wrong,
                                  PatchingConfig(sweep="resid_pre", reuse_prefix=reuse))
        if reuse:
            costs.append(res.cost)
        return time.perf_counter() - t, res.raw[0]

    def plain_forward():  # as many tokens as the sweep's largest forward (known after its first run)
        rows = max(1, (costs[-1].tokens if costs else 630) // clean.shape[1])
        ids = clean.input_ids.repeat(rows, 1)
        rate, seconds = plain_forward_rate(model, ids)
        last_rate, last_seconds = plain_forward_rate(model, ids, last_only=True)
        plain.append({"rate": rate, "seconds": seconds, "rows": rows, "last_only_rate": last_rate})
        return seconds + last_seconds, None

    contenders = {"interplab": lambda: ours(True), "interplab_no_prefix": lambda: ours(False),
                  "plain_forward": plain_forward}
    if args.naive:
        runs["interplab_naive"] = []

        def naive():
            t = time.perf_counter()
            res = activation_patching(model, clean, corrupt, ans, wrong,
                                      PatchingConfig(sweep="resid_pre", naive=True))
            return time.perf_counter() - t, res.raw[0]

        contenders["interplab_naive"] = naive
    notes = []
    if not args.no_tl:
        try:
            from transformer_lens import patching
            from transformer_lens.model_bridge import TransformerBridge

            bridge = TransformerBridge.boot_transformers(model.source["source"], device="cpu",
                                                         dtype=torch.float32)
            bridge.eval()
            _, clean_cache = bridge.run_with_cache(clean.input_ids)

            def metric(logits):
                return logits[0, -1, mary] - logits[0, -1, john]

            def tl():
                t = time.perf_counter()
                with torch.no_grad():
                    grid = patching.get_act_patch_resid_pre(bridge, corrupt.input_ids, clean_cache, metric)
                return time.perf_counter() - t, grid

            runs["transformer_lens"] = []
            contenders["transformer_lens"] = tl
        except Exception as err:  # a peer failing must not hide our numbers
            notes.append(f"TransformerLens skipped: {err!r}")

    for r in range(args.repeats):
        names = list(contenders)
        names = names[r % len(names):] + names[: r % len(names)]  # rotate the order
        for name in names:
            seconds, grid = contenders[name]()
            runs.setdefault(name, []).append(seconds)
            if grid is not None:
                grids[name] = grid.detach().float()
            print(f"round {r} {name:22s} {seconds:7.2f} s", flush=True)

    med = {k: statistics.median(v) for k, v in runs.items() if v}
    out = {"cells": n_layers * n_pos, "layers": n_layers, "positions": n_pos,
           "median_s": med, "runs_s": runs, "notes": notes, "threads": args.threads}
    print(f"\nresid_pre sweep, {n_layers} layers x {n_pos} positions = {n_layers * n_pos} cells, 1 IOI pair")
    print(f"{'contender':24s} {'median s':>9s} {'ms/cell':>8s} {'vs TL':>7s}")
    tl_s = med.get("transformer_lens")
    for k, v in med.items():
        if k == "plain_forward":
            continue
        ratio = f"{tl_s / v:6.1f}x" if tl_s else "   n/a"
        print(f"{k:24s} {v:9.2f} {1000 * v / (n_layers * n_pos):8.1f} {ratio}")
    for k, g in grids.items():
        if k != "interplab":
            diff = float((g - grids["interplab"]).abs().max())
            out[f"max_abs_diff_vs_{k}"] = diff
            print(f"max |interplab - {k}| = {diff:.2e}")
    cost = costs[-1]
    plain_rate = statistics.median(p["rate"] for p in plain)
    last_rate = statistics.median(p["last_only_rate"] for p in plain)
    rate = statistics.median(c.needed_flops / s for c, s in zip(costs, runs["interplab"]))
    out["flops"] = {"needed": cost.needed_flops, "executed": cost.executed_flops,
                    "forwards": cost.forwards, "largest_forward_tokens": cost.tokens,
                    "achieved_gflops": rate / 1e9, "plain_forward_gflops": plain_rate / 1e9,
                    "plain_forward_rows": plain[-1]["rows"], "fraction_of_plain": rate / plain_rate,
                    "plain_last_logits_gflops": last_rate / 1e9, "fraction_of_plain_last_logits": rate / last_rate}
    print(f"FLOPs needed {cost.needed_flops / 1e9:.0f} G, executed {cost.executed_flops / 1e9:.0f} G "
          f"in {cost.forwards} forwards (largest {cost.tokens} tokens)")
    print(f"achieved {rate / 1e9:.1f} GFLOP/s = {rate / plain_rate:.2f} of a plain batched forward of "
          f"{plain[-1]['rows']} x {clean.shape[1]} tokens ({plain_rate / 1e9:.1f} GFLOP/s, every position's "
          f"logits); {rate / last_rate:.2f} of the same forward with the last position's logits only "
          f"({last_rate / 1e9:.1f} GFLOP/s)")
    for n in notes:
        print("note:", n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
