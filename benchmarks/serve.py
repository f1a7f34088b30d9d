"""Serving throughput: 32 concurrent requests, each with its own steering vector, through the
continuous-batching engine, against (a) the same requests one at a time and (b) the same
requests without steering, side by side in one process, interleaved.

    python benchmarks/serve.py [--clients 32] [--new-tokens 32] [--repeats 2] [--threads 1] [--http]

Model: the default SmolLM2-135M. Each request: a distinct prompt (5-20 tokens) and a distinct
random unit steering vector (scale 4) at a layer of its own (resid_post of layer i mod 30),
greedy, 32 new tokens. Reports tokens/s, p50 / p99 request latency and peak resident memory
(ru_maxrss) of each contender, and the ratios the issue sets goals for (concurrent steered ≥ 5×
sequential, ≥ 0.8× concurrent unsteered). Writes benchmarks/results/serve.json.

``--http``: the same through the server: ``create_app`` on uvicorn on a loopback port in this
process, 32 concurrent httpx clients posting ``/v1/completions`` with the steering vector inline
in ``interplab.interventions`` (results/serve_http.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import threading
import time
from pathlib import Path

import torch

import interplab
from interplab.interventions import Steer
from interplab.serve.engine import Engine, GenRequest

WORDS = ("the river ran past the old mill where children played every summer and the miller "
         "told stories of storms and ships and the long roads north to the mountains").split()


def requests(model, clients: int, new_tokens: int, steered: bool) -> list[GenRequest]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(clients):
        n = 5 + (i * 7) % 16
        text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n))
        ids = model.tokenizer(text)["input_ids"]
        vec = torch.randn(model.dims.d_model, generator=g)
        steer = [Steer(f"L{i % model.dims.n_layers}.resid_post", vector=vec / vec.norm(), scale=4.0)]
        out.append(GenRequest(ids, max_new_tokens=new_tokens, interventions=steer if steered else []))
    return out


@contextlib.contextmanager
def live_server(model, engine):
    import uvicorn

    from interplab.serve.app import create_app
    from interplab.serve.server import listen
    from interplab.serve.settings import Settings

    app = create_app(model, engine, None, Settings(model_name="smollm2-135m"))
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def body(model, req: GenRequest) -> dict:
    out = {"model": "smollm2-135m", "prompt": model.tokenizer.decode(req.prompt),
           "max_tokens": req.max_new_tokens, "temperature": 0}
    if req.interventions:
        iv = req.interventions[0]
        out["interplab"] = {"interventions": [{"op": "steer", "site": str(iv.site),
                                               "vector": iv.vector.tolist(), "scale": iv.scale}]}
    return out


def run_http(url: str, bodies: list[dict], concurrent: bool) -> dict:
    import httpx

    async def one(client, b):
        t = time.perf_counter()
        r = await client.post(f"{url}/v1/completions", json=b)
        r.raise_for_status()
        return time.perf_counter() - t, r.json()["usage"]["completion_tokens"]

    async def go():
        async with httpx.AsyncClient(timeout=3600) as client:
            if concurrent:
                return await asyncio.gather(*(one(client, b) for b in bodies))
            return [await one(client, b) for b in bodies]

    t0 = time.perf_counter()
    done = asyncio.run(go())
    seconds = time.perf_counter() - t0
    lat = sorted(x for x, _ in done)
    return {"seconds": seconds, "tokens_per_s": sum(n for _, n in done) / seconds, "p50_s": lat[len(lat) // 2],
            "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(engine: Engine, reqs: list[GenRequest], concurrent: bool) -> dict:
    t0 = time.perf_counter()
    latencies = []
    if concurrent:
        handles = [engine.submit(r) for r in reqs]
        for h in handles:
            h.result(timeout=3600)
        latencies = list(engine.stats.latencies)[-len(reqs):]
    else:
        for r in reqs:
            engine.submit(r).result(timeout=3600)
            latencies.append(engine.stats.latencies[-1])
    seconds = time.perf_counter() - t0
    tokens = sum(r.max_new_tokens for r in reqs)
    lat = sorted(latencies)
    return {"seconds": seconds, "tokens_per_s": tokens / seconds, "p50_s": lat[len(lat) // 2],
            "p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--http", action="store_true", help="through the HTTP server (httpx clients)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.out = args.out or f"benchmarks/results/serve{'_http' if args.http else ''}.json"
    torch.set_num_threads(args.threads)
    model = interplab.load("smollm2-135m")
    engine = Engine(model, max_batch=args.clients)
    steered = requests(model, args.clients, args.new_tokens, True)
    plain = requests(model, args.clients, args.new_tokens, False)
    contenders = {"concurrent_steered": (steered, True), "concurrent_unsteered": (plain, True),
                  "sequential_steered": (steered, False)}
    runs: dict[str, list[dict]] = {k: [] for k in contenders}
    with contextlib.ExitStack() as stack:
        stack.callback(engine.close)
        url = stack.enter_context(live_server(model, engine)) if args.http else None
        for r in range(args.repeats):
            names = list(contenders)
            names = names[r % len(names):] + names[: r % len(names)]
            for name in names:
                reqs, concurrent = contenders[name]
                runs[name].append(run_http(url, [body(model, q) for q in reqs], concurrent) if args.http
                                  else run(engine, reqs, concurrent))
                print(f"round {r} {name:22s} {runs[name][-1]['tokens_per_s']:8.1f} tok/s", flush=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    ratios = {"steered_vs_sequential": med["concurrent_steered"]["tokens_per_s"] / med["sequential_steered"]["tokens_per_s"],
              "steered_vs_unsteered": med["concurrent_steered"]["tokens_per_s"] / med["concurrent_unsteered"]["tokens_per_s"]}
    print(f"\n{args.clients} clients x {args.new_tokens} new tokens, {args.threads} thread(s)"
          f"{', over HTTP' if args.http else ', engine API'}")
    print(f"{'contender':24s} {'tok/s':>8s} {'p50 s':>7s} {'p99 s':>7s}")
    for k, v in med.items():
        print(f"{k:24s} {v['tokens_per_s']:8.1f} {v['p50_s']:7.2f} {v['p99_s']:7.2f}")
    print(f"steered concurrent / sequential = {ratios['steered_vs_sequential']:.2f}x (goal >= 5); "
          f"/ unsteered concurrent = {ratios['steered_vs_unsteered']:.2f} (goal >= 0.8); "
          f"peak RSS {max(v['max_rss_mib'] for v in med.values()):.0f} MiB")
    out = {"median": med, "runs": runs, "ratios": ratios, "clients": args.clients,
           "new_tokens": args.new_tokens, "threads": args.threads, "http": args.http}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
