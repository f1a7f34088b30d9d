"""Attribution patching and IG against exact activation patching, on a real model (opt-in).

Hand-written IOI prompts (Wang et al. 2022) of one token length: "When A and B went to the
PLACE, B gave a OBJECT to" with answer " A" and wrong " B"; the corrupt prompt swaps in two
other single-token names C and D ("ABC" corruption), so it carries no information on A vs B.
Exact patching of every head (``activation_patching(sweep="heads")``, denoising, logit_diff) is
run once; attribution (2F+1B) and IG (2F + m(F+B)) are compared with it cell by cell: Pearson r
and Kendall tau-b of the per-head mean effects, with BCa bootstrap CIs over heads.

    python benchmarks/attribution.py                      # smollm2-135m, 8 prompts, heads, m=5
    python benchmarks/attribution.py --n-prompts 4 --nodes heads mlp resid_pre --ig-steps 5 10

Times are single wall-clock runs on whatever else the machine is doing: "passes s" is the
estimate's own forward / backward passes (``AttributionResult.seconds``), "call s" the whole
call including its bootstrap summary; "vs exact" is exact-sweep time over call time, the figure
to quote.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

import interplab
from interplab.analyses.attribution import AttributionConfig, attribution_patching, compare_with
from interplab.analyses.attribution_engine import cells as node_cells
from interplab.analyses.attribution_engine import exact as exact_sweep

TEMPLATE = "When {a} and {b} went to the {place}, {b} gave a {obj} to"
NAMES = [" Mary", " John", " Alice", " Bob", " Tom", " Anna", " Sarah", " James", " Mark",
         " Lisa", " David", " Emma", " Paul", " Kate", " Jack", " Jane", " Peter", " Lucy"]
PLACES = [" store", " park", " school", " beach", " office", " market"]
OBJECTS = [" drink", " book", " ring", " ball", " gift", " bag"]


def single_token(tok, word: str) -> int | None:
    ids = tok(word, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def ioi_prompts(model, n: int, seed: int):
    """``n`` clean / corrupt pairs of one token length, answers and wrong ids."""
    tok = model.tokenizer
    names = [w for w in NAMES if single_token(tok, w) is not None]
    g = torch.Generator().manual_seed(seed)
    clean, corrupt, answers, wrong, length = [], [], [], [], None
    for _ in range(50 * n):
        a, b, c, d = (names[i] for i in torch.randperm(len(names), generator=g)[:4].tolist())
        place = PLACES[int(torch.randint(len(PLACES), (1,), generator=g))]
        obj = OBJECTS[int(torch.randint(len(OBJECTS), (1,), generator=g))]
        text = TEMPLATE.format(a=a.strip(), b=b.strip(), place=place.strip(), obj=obj.strip())
        bad = TEMPLATE.format(a=c.strip(), b=d.strip(), place=place.strip(), obj=obj.strip())
        ids_c = tok(text)["input_ids"]
        ids_x = tok(bad)["input_ids"]
        if len(ids_c) != len(ids_x) or (length is not None and len(ids_c) != length):
            continue
        length = len(ids_c)
        clean.append(text)
        corrupt.append(bad)
        answers.append(single_token(tok, a))
        wrong.append(single_token(tok, b))
        if len(clean) == n:
            break
    return clean, corrupt, torch.tensor(answers), torch.tensor(wrong)


def row(name, r, seconds, exact_seconds):
    def ci(c):
        return f"[{float(c.low):+.2f}, {float(c.high):+.2f}]"

    passes = f"{r.passes['forward']}F+{r.passes['backward']}B" if r.passes else "-"
    return (f"{name:<24} {r.pearson:>7.3f} {ci(r.pearson_ci):>16} {r.kendall:>7.3f} "
            f"{ci(r.kendall_ci):>16} {r.seconds:>8.2f} {seconds:>7.2f} {exact_seconds / seconds:>8.1f}x "
            f"{passes:>9}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n-prompts", type=int, default=8)
    p.add_argument("--nodes", nargs="+", default=["heads"], choices=["heads", "mlp", "resid_pre"])
    p.add_argument("--ig-steps", type=int, nargs="+", default=[5])
    p.add_argument("--metric", default="logit_diff")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t = time.perf_counter()
    model = interplab.load(args.model)
    print(f"{model}  loaded in {time.perf_counter() - t:.1f}s, torch threads {torch.get_num_threads()}")
    clean, corrupt, answers, wrong = ioi_prompts(model, args.n_prompts, args.seed)
    n_tok = model.to_batch(clean).shape[1]
    print(f"{len(clean)} IOI prompts of {n_tok} tokens, e.g. {clean[0]!r} -> {model.tokenizer.decode([int(answers[0])])!r}"
          f" (corrupt {corrupt[0]!r})")
    with torch.no_grad():
        last = model.run(clean)[:, -1]
        ld = last[torch.arange(len(clean)), answers] - last[torch.arange(len(clean)), wrong]
    print(f"clean logit diff: mean {float(ld.mean()):.3f}, min {float(ld.min()):.3f}")

    for nodes in args.nodes:
        base = AttributionConfig(nodes=nodes, metric=args.metric, seed=args.seed)
        cb, xb = model.to_batch(clean), model.to_batch(corrupt)
        layers, positions, _ = node_cells(model, base, cb.shape[1])
        t = time.perf_counter()
        exact = exact_sweep(model, cb, xb, answers, wrong, base, layers, positions)
        exact_s = time.perf_counter() - t
        n_cells = exact.effects[0].numel()
        print(f"\nnodes={nodes}: {n_cells} cells; exact patching {exact_s:.2f}s "
              f"(max |mean effect| {float(exact.effects.mean(0).abs().max()):.3f})")
        print(f"{'method':<24} {'pearson':>7} {'95% CI (cells)':>16} {'tau':>7} {'95% CI (cells)':>16} "
              f"{'passes s':>8} {'call s':>7} {'vs exact':>9} {'passes':>9}")
        runs = [("attribution", "attribution", "activations", 1)]
        runs += [(f"ig m={m} ({path})", "ig", path, m)
                 for m, path in itertools.product(args.ig_steps, ("activations", "inputs"))]
        for name, method, path, m in runs:
            cfg = AttributionConfig(nodes=nodes, metric=args.metric, method=method, ig_path=path,
                                    ig_steps=m, seed=args.seed)
            t = time.perf_counter()
            r = attribution_patching(model, cb, xb, answers, wrong, cfg)
            seconds = time.perf_counter() - t
            r = compare_with(r, exact)
            print(row(name, r, seconds, exact_s))


if __name__ == "__main__":
    main()
