"""A bounded load test of `interplab serve` on loopback: concurrent clients send a mix of requests
(plain, steered, with returned activations, streamed, some cancelled mid-stream) for a fixed
time, then stop; reports failed requests, throughput and resident memory over time.

    python benchmarks/serve_load.py [--seconds 120] [--clients 16] [--threads 1]   (from the repo root)

The server (``create_app`` on uvicorn, default model, in this process) and the clients share
the process, so resident memory covers both. Memory growth is judged by comparing the median
RSS of the run's second half with that of its second quarter (after warm-up). Writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import time
from pathlib import Path

import httpx
import torch
from serve import live_server  # benchmarks/serve.py

import interplab
from interplab.serve.engine import Engine

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):",
           "The best way to learn a language is", "In the beginning"]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def request(rng: random.Random, d_model: int) -> tuple[dict, bool]:
    body = {"model": "smollm2-135m", "prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(4, 24),
            "temperature": rng.choice([0, 0.8]), "seed": rng.randint(0, 1000)}
    kind = rng.random()
    if kind < 0.4:
        vec = [rng.gauss(0, 1) for _ in range(d_model)]
        body["interplab"] = {"interventions": [{"op": "steer", "site": f"L{rng.randint(0, 29)}.resid_post",
                                                "vector": vec, "scale": 2.0}]}
    elif kind < 0.6:
        body["interplab"] = {"return": {"activations": {"sites": ["L10.resid_post"], "reduce": "mean"}}}
    return body, rng.random() < 0.3  # stream?


async def client(url: str, seed: int, stop: float, d_model: int, tally: dict) -> None:
    rng = random.Random(seed)
    async with httpx.AsyncClient(timeout=300) as http:
        while time.monotonic() < stop:
            body, stream = request(rng, d_model)
            try:
                if stream:
                    body["stream"] = True
                    cancel = rng.random() < 0.3
                    async with http.stream("POST", f"{url}/v1/completions", json=body) as r:
                        r.raise_for_status()
                        async for line in r.aiter_lines():
                            if cancel and line.startswith("data:"):
                                break  # a client that goes away mid-stream
                    tally["cancelled" if cancel else "ok"] += 1
                else:
                    r = await http.post(f"{url}/v1/completions", json=body)
                    r.raise_for_status()
                    tally["tokens"] += r.json()["usage"]["completion_tokens"]
                    tally["ok"] += 1
            except Exception as err:  # counted, never hidden
                tally["failed"] += 1
                tally.setdefault("errors", []).append(repr(err)[:200])


async def main_async(url: str, args, d_model: int) -> dict:
    tally = {"ok": 0, "cancelled": 0, "failed": 0, "tokens": 0}
    samples = []
    t0 = time.monotonic()
    stop = t0 + args.seconds

    async def sampler():
        while time.monotonic() < stop:
            samples.append((time.monotonic() - t0, rss_mib()))
            await asyncio.sleep(2)

    await asyncio.gather(sampler(), *(client(url, i, stop, d_model, tally) for i in range(args.clients)))
    tally["seconds"] = time.monotonic() - t0
    tally["rss"] = samples
    return tally


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = interplab.load("smollm2-135m")
    engine = Engine(model, max_batch=32)
    try:
        with live_server(model, engine) as url:
            out = asyncio.run(main_async(url, args, model.dims.d_model))
    finally:
        engine.close()
    rss = [m for _, m in out["rss"]]
    q = len(rss) // 4
    early, late = statistics.median(rss[q : 2 * q] or rss), statistics.median(rss[2 * q :] or rss)
    out["rss_early_mib"], out["rss_late_mib"] = early, late
    print(f"{out['seconds']:.0f} s, {args.clients} clients: {out['ok']} ok, {out['cancelled']} cancelled "
          f"mid-stream, {out['failed']} failed; {out['tokens'] / out['seconds']:.1f} tok/s (non-streamed)")
    print(f"RSS median, 2nd quarter {early:.0f} MiB -> 2nd half {late:.0f} MiB (max {max(rss):.0f} MiB)")
    for e in out.get("errors", [])[:5]:
        print("error:", e)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
