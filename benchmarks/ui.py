"""The web UI at scale: a 16,384-latent dictionary's feature statistics and 1,000 run records,
served by ``interplab ui``'s app on uvicorn on a loopback port in this process.

    python benchmarks/ui.py [--latents 16384] [--runs 1000] [--requests 300] [--copy-from runs/] [--browser]

Measures, after one warm-up request each (the first index scan and the first statistics load are
reported apart):
* HTTP latency p50 / p95 of what each page asks for: the index (its HTML shell and
  ``/api/runs``, 100 runs a page, sorted by date; and filtered by a word), the latent list
  (``/api/latents``, sorted, and searched by token text) and a feature page (its shell and
  ``/api/feature`` for a random latent);
* with ``--browser``: headless Chromium's time from navigation to the page being drawn
  (``body[data-ready]``), p50 / p95 over repeated loads, and each page's weight: the bytes on the
  wire (compressed) of everything it loads with an empty cache, and with a warm cache; also a
  run page with figures (an IOI demo record, when the copied records have one), which loads
  Plotly's JS.

The runs are copies of the records under ``--copy-from`` (real records, cycled; default: the
repository's ``runs/`` when it has some) or, without any, synthetic records of the same layout.
The dictionary's statistics are synthetic tensors with the shapes ``eval-sae`` writes (10 top
contexts and 5 × 4 quantile samples of 16 tokens, 10 logit effects each way, 8 neighbours, a
5,000-token vocabulary). Goal (issue 15): p95 ≤ 300 ms and ≤ 1 MB a page. Writes
benchmarks/results/ui.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def synthetic_stats(n: int, seed: int = 0):
    from interplab.dictionary.features import FeatureConfig, FeatureStats

    g = torch.Generator().manual_seed(seed)
    top, w, nq, k, nl, nn, vocab = 10, 16, 5, 4, 10, 8, 5000
    cfg = FeatureConfig(n_top=top, window=w, n_quantiles=nq, n_per_quantile=k, n_neighbours=nn, n_logits=nl)
    peak = torch.rand(n, generator=g) * 10 + 0.1
    top_values = (peak[:, None] * torch.linspace(1, 0.3, top)[None]).float()
    ints = lambda *shape, hi=vocab: torch.randint(0, hi, shape, generator=g)  # noqa: E731
    return FeatureStats(
        config=cfg, input_site="L15.resid_post", target_site="L15.resid_post", n_contexts=4000, n_tokens=512_000,
        density=torch.rand(n, generator=g, dtype=torch.float64) * 0.05,
        mean_activation=torch.rand(n, generator=g, dtype=torch.float64) * 3,
        top_values=top_values, top_contexts=ints(n, top, hi=4000), top_positions=ints(n, top, hi=128),
        window_start=ints(n, top, hi=112), window_acts=torch.rand(n, top, w, generator=g) * peak[:, None, None],
        window_tokens=ints(n, top, w), hist_counts=ints(n, 40, hi=500), hist_edges=torch.linspace(-4, 4, 41, dtype=torch.float64),
        logit_top_ids=ints(n, nl), logit_top_values=torch.rand(n, nl, generator=g),
        logit_bottom_ids=ints(n, nl), logit_bottom_values=-torch.rand(n, nl, generator=g),
        quantile_values=torch.rand(n, nq, k, generator=g) * peak[:, None, None],
        quantile_contexts=ints(n, nq, k, hi=4000), quantile_positions=ints(n, nq, k, hi=128),
        quantile_start=ints(n, nq, k, hi=112), quantile_acts=torch.rand(n, nq, k, w, generator=g),
        quantile_tokens=ints(n, nq, k, w), quantile_counts=ints(n, nq, hi=100),
        neighbour_ids=ints(n, nn, hi=n), neighbour_cos=torch.rand(n, nn, generator=g),
        vocab={i: f" tok{i}" for i in range(vocab)}, context_len=128)


def synthetic_run(path: Path, i: int) -> None:
    path.mkdir(parents=True)
    analysis = ("patch", "lens", "heads", "probe", "steer")[i % 5]
    (path / "config.json").write_text(json.dumps({"analysis": analysis, "model": "smollm2-135m", "seed": i}))
    headline = {f"metric_{k}": random.random() for k in range(8)}
    (path / "results.json").write_text(json.dumps({"analysis": analysis, "headline": headline,
                                                   "body": [random.random() for _ in range(2000)]}))
    (path / "provenance.json").write_text(json.dumps({"started": f"2026-12-{1 + i % 28:02d}T00:00:{i % 60:02d}",
                                                      "ended": "2026-12-31T00:00:00", "model": "smollm2-135m"}))


def make_runs(root: Path, n: int, source: Path | None) -> str:
    records = sorted(p for p in source.iterdir() if (p / "provenance.json").is_file()) if source else []
    for i in range(n):
        if records:
            src = records[i % len(records)]
            shutil.copytree(src, root / f"{src.name}-copy{i:04d}")
        else:
            synthetic_run(root / f"run-{i:04d}", i)
    return f"{len(records)} real records under {source}, cycled" if records else "synthetic records"


def timed(client: httpx.Client, path: str) -> tuple[float, int]:
    t = time.perf_counter()
    r = client.get(path)
    r.raise_for_status()
    return (time.perf_counter() - t) * 1000, len(r.content)


def summary(ms: list[float]) -> dict:
    ms = sorted(ms)
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
            "max_ms": round(ms[-1], 2)}


def http_bench(url: str, did: str, n_latents: int, requests: int) -> dict:
    rng = random.Random(0)
    paths = {
        "index shell (/)": lambda: "/",
        "index data (/api/runs, 100 a page)": lambda: f"/api/runs?offset={100 * rng.randrange(10)}",
        "index filtered (/api/runs?q=...)": lambda: f"/api/runs?q={rng.choice(['patch', 'lens', 'copy01', '2026-12-1'])}",
        "latent list (/api/latents, by density)": lambda: f"/api/latents?d={did}&offset={50 * rng.randrange(300)}",
        "latent search (/api/latents?q=token)": lambda: f"/api/latents?d={did}&q=tok{rng.randrange(5000)}",
        "feature shell (/feature)": lambda: f"/feature?d={did}&i={rng.randrange(n_latents)}",
        "feature data (/api/feature)": lambda: f"/api/feature?d={did}&i={rng.randrange(n_latents)}",
    }
    out = {}
    with httpx.Client(base_url=url, timeout=60, headers={"accept-encoding": "gzip"}) as client:
        first = {"index scan": timed(client, "/api/runs")[0], "statistics load": timed(client, f"/api/feature?d={did}&i=0")[0],
                 "search index build": timed(client, f"/api/latents?d={did}&q=tok1")[0]}
        times = {name: [] for name in paths}
        for _ in range(requests):  # interleaved
            for name, make in paths.items():
                times[name].append(timed(client, make())[0])
        for name in paths:
            out[name] = summary(times[name])
    return {"first_requests_ms": {k: round(v, 1) for k, v in first.items()}, "latency": out}


def browser_bench(url: str, did: str, n_latents: int, loads: int) -> dict:
    from tests.ui.browser import chromium, tab

    rng = random.Random(1)
    pages = {"index": lambda: "/", "latent list": lambda: f"/features?d={did}",
             "feature": lambda: f"/feature?d={did}&i={rng.randrange(n_latents)}"}
    runs = httpx.get(f"{url}/api/runs", params={"analysis": "demo", "limit": 1}).json()["runs"]
    if runs:  # a run page with figures: it loads Plotly (cached after the first visit)
        pages["run (an IOI demo record)"] = lambda: f"/run?id={runs[0]['id']}"
    out = {}
    with chromium() as browser:
        for name, make in pages.items():
            weights = []
            for cache in ("cold", "warm"):
                with tab(browser, url, route=False) as t:
                    if cache == "warm":
                        t.open(make())
                    # bytes received from the network (compressed; 0 for a cache hit), from Chromium itself
                    cdp = t.page.context.new_cdp_session(t.page)
                    cdp.send("Network.enable")
                    got = []
                    cdp.on("Network.loadingFinished", lambda e, got=got: got.append(e["encodedDataLength"]))
                    t.open(make())
                    t.page.wait_for_load_state("networkidle")
                    weights.append(int(sum(got)))
                    assert not t.errors, t.errors
            ms = []
            with tab(browser, url, route=False) as t:
                t.open(make())
                for _ in range(loads):
                    start = time.perf_counter()
                    t.open(make())
                    ms.append((time.perf_counter() - start) * 1000)
            out[name] = {**summary(ms), "weight_cold_bytes": weights[0], "weight_warm_bytes": weights[1]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latents", type=int, default=16384)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--copy-from", default=str(ROOT / "runs"))
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--loads", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from tests.integration.serving import live

    from interplab.ui.app import create_ui_app
    from interplab.ui.features import Features

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source = Path(args.copy_from) if args.copy_from and Path(args.copy_from).is_dir() else None
        kind = make_runs(tmp / "runs", args.runs, source)
        synthetic_stats(args.latents).save(tmp / "sae" / "features")
        features = Features.discover(tmp / "runs", [str(tmp / "sae")])
        did = next(iter(features.sources))
        app = create_ui_app(tmp / "runs", features=features)
        with live(app) as url:
            result = {"latents": args.latents, "runs": args.runs, "records": kind, "threads": 1,
                      **http_bench(url, did, args.latents, args.requests)}
            if args.browser:
                result["browser"] = browser_bench(url, did, args.latents, args.loads)
    print(json.dumps(result, indent=2))
    out = ROOT / "benchmarks" / "results" / "ui.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
