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

    def ours(reuse: bool):
        t = time.perf_counter()
        res = activation_patching(model, clean, corrupt, ans, wrong,
                                  PatchingConfig(sweep="resid_pre", reuse_prefix=reuse))
        return time.perf_counter() - t, res.raw[0]

    contenders = {"interplab": lambda: ours(True), "interplab_no_prefix": lambda: ours(False)}
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
            runs[name].append(seconds)
            grids[name] = grid.detach().float()
            print(f"round {r} {name:22s} {seconds:7.2f} s", flush=True)

    med = {k: statistics.median(v) for k, v in runs.items() if v}
    out = {"cells": n_layers * n_pos, "layers": n_layers, "positions": n_pos,
           "median_s": med, "runs_s": runs, "notes": notes, "threads": args.threads}
    print(f"\nresid_pre sweep, {n_layers} layers x {n_pos} positions = {n_layers * n_pos} cells, 1 IOI pair")
    print(f"{'contender':24s} {'median s':>9s} {'ms/cell':>8s} {'vs TL':>7s}")
    tl_s = med.get("transformer_lens")
    for k, v in med.items():
        ratio = f"{tl_s / v:6.1f}x" if tl_s else "   n/a"
        print(f"{k:24s} {v:9.2f} {1000 * v / (n_layers * n_pos):8.1f} {ratio}")
    for k, g in grids.items():
        if k != "interplab":
            diff = float((g - grids["interplab"]).abs().max())
            out[f"max_abs_diff_vs_{k}"] = diff
            print(f"max |interplab - {k}| = {diff:.2e}")
    for n in notes:
        print("note:", n)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
