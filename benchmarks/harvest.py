"""Harvest throughput: interplab's ``harvest`` into a store against the plain HF forward.

On the default model (smollm2-135m, 30 layers) and the default corpus (classics), contexts of
128 tokens, ``--batch`` contexts per forward, about ``--tokens`` rows:

  hf      plain ``model.hf(input_ids)`` over the same packed contexts (packed once, beforehand;
          the whole forward, all 30 layers and the unembedding)
  L15     harvest of L15.resid_post (the middle layer) into a fresh bfloat16 store
  L3      harvest of L3.resid_post (an early layer: the forward stops after block 3)
  last    harvest of L29.resid_post (the last layer)

A harvest's time includes tokenizing and packing the corpus and writing the shards (fsync'd),
so the ratio to ``hf`` is end to end. Rounds are interleaved in a fresh seeded random order;
we report medians, tokens/s, the ratio of the harvest's speed to plain HF's (``> 1`` means
faster than a full forward), and bytes on disk per token.

    python benchmarks/harvest.py --tokens 65536 --rounds 5 --threads 2
    python benchmarks/harvest.py --tokens 4096 --rounds 1        # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

import interplab
from interplab.activations import CorpusConfig, HarvestConfig, harvest, iter_documents, pack

CTX = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=32768, help="rows to harvest per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=16, help="contexts per forward")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "harvest.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = interplab.load(args.model)
    n_layers = model.dims.n_layers
    sites = {"L15": f"L{min(15, n_layers - 1)}.resid_post", "L3": "L3.resid_post",
             "last": f"L{n_layers - 1}.resid_post"}
    n_ctx = math.ceil(args.tokens / (CTX - 1))
    ids = pack(model.tokenizer, iter_documents(CorpusConfig()), CTX, max_contexts=n_ctx)

    def plain_hf() -> dict:
        start = time.perf_counter()
        with torch.no_grad():
            for b in range(0, n_ctx, args.batch):
                model.hf(ids[b:b + args.batch])
        return {"seconds": time.perf_counter() - start}

    def harvest_one(site: str, root: Path) -> dict:
        cfg = HarvestConfig(out=str(root / site), model=args.model, sites=(site,), n_tokens=args.tokens,
                            ctx_len=CTX, batch_size=args.batch, dtype="bfloat16", overwrite=True)
        start = time.perf_counter()
        report = harvest(model, cfg, progress=False)
        return {"seconds": time.perf_counter() - start, "bytes_per_token": report.bytes_per_token}

    rows: dict[str, list[dict]] = {k: [] for k in ["hf", *sites]}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
        harvest_one(sites["L3"], Path(tmp))  # warm-up
        plain_hf()
        for r in range(args.rounds):
            order = list(rows)
            rng.shuffle(order)
            for name in order:
                rows[name].append(plain_hf() if name == "hf" else harvest_one(sites[name], Path(tmp) / f"r{r}"))

    hf_median = statistics.median(x["seconds"] for x in rows["hf"])
    results = {}
    print(f"{args.tokens} tokens, ctx {CTX}, batch {args.batch}, {args.threads} threads, {args.rounds} rounds")
    print(f"{'run':6} {'site':16} {'median s':>9} {'tokens/s':>10} {'speed vs HF':>12} {'bytes/token':>12}")
    for name, runs in rows.items():
        median = statistics.median(x["seconds"] for x in runs)
        bpt = statistics.median(x.get("bytes_per_token", 0.0) for x in runs)
        results[name] = {"site": sites.get(name, "(full forward)"), "median_s": median,
                         "tokens_per_s": args.tokens / median, "speed_vs_hf": hf_median / median,
                         "bytes_per_token": bpt, "seconds": [x["seconds"] for x in runs]}
        print(f"{name:6} {results[name]['site']:16} {median:9.3f} {args.tokens / median:10.0f} "
              f"{hf_median / median:12.2f} {bpt:12.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "torch": torch.__version__, "platform": platform.platform(),
                               "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
