"""Feature labelling, measured: planted latents scored by the default instruct model, and a real
SAE's latents labelled end to end, with the time it takes on this machine.

    python benchmarks/explain.py planted [--n-latents 24] [--judge-examples 10]
    python benchmarks/explain.py sae --dictionary DIR [--n-latents 200] [--explainer rule] [--judge rule]

``planted``: 24 token-set latents over the offline classics corpus (``explain.planted``), labelled
by the rule explainer and judged by SmolLM2-135M-Instruct through the runtime (``LLMJudge``:
P(Yes) for "does the feature fire on this text?"), each label against its shuffled and random
controls: mean balanced accuracy and AUROC, the gap with its bootstrap CI over latents and a
paired permutation test (the issue's check: planted latents above their shuffled control,
reported with the effect size whatever it is). The judge sees ``--judge-examples`` activating and
as many non-activating windows per latent.

``sae``: ``interplab explain`` on a dictionary, timed, then timed again with everything in place
removed but the LM cache (a re-run from the cache must give identical labels and scores).
Writes benchmarks/results/explain_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def planted(args) -> dict:
    from interplab.activations import CorpusConfig, iter_documents, pack
    from interplab.explain.llm import CachedLM, LLMJudge, LMCache, LocalLM
    from interplab.explain.planted import planted_check
    from interplab.explain.sampling import SampleConfig
    from interplab.runtime.loading import load

    model = load("smollm2-135m")
    contexts = pack(model.tokenizer, iter_documents(CorpusConfig()), 64, max_contexts=800)
    cache_dir = Path(args.cache or ROOT / "benchmarks" / "results" / "explain-cache")
    cache_dir.mkdir(parents=True, exist_ok=True)
    judge = LLMJudge(CachedLM(LocalLM(model), LMCache(cache_dir / "planted-lm-cache.jsonl")))
    cfg = SampleConfig(n_score_pos=args.judge_examples, n_score_neg=args.judge_examples, seed=0)
    t0 = time.perf_counter()
    report = planted_check(model.tokenizer, contexts, n_latents=args.n_latents, seed=0, cfg=cfg, judge=judge)
    seconds = time.perf_counter() - t0
    rule = planted_check(model.tokenizer, contexts, n_latents=args.n_latents, seed=0, cfg=cfg)
    return {"mode": "planted", "judge": "SmolLM2-135M-Instruct (LLMJudge, local)", "explainer": "rule",
            "seconds": round(seconds, 1), "f1_mean": report["f1_mean"], "f1_min": report["f1_min"],
            "llm_judge": report["summary"], "rule_judge": rule["summary"],
            "examples_per_latent": 2 * args.judge_examples}


def sae(args) -> dict:
    from interplab.cli.main import main as cli

    labels = Path(args.labels or ROOT / "benchmarks" / "results" / "explain-labels")
    if labels.exists() and not args.keep:
        shutil.rmtree(labels)
    common = ["explain", "--dictionary", args.dictionary, "--n-latents", str(args.n_latents), "--explainer",
              args.explainer, "--judge", args.judge, "--labels-dir", str(labels), "--out", str(labels / "runs")]
    t0 = time.perf_counter()
    assert cli(common) == 0
    first = time.perf_counter() - t0
    before = json.loads((labels / "labels.json").read_text())
    for name in ("explanations.jsonl", "scores.jsonl", "labels.json"):
        (labels / name).unlink()
    t0 = time.perf_counter()
    assert cli(common) == 0
    second = time.perf_counter() - t0
    after = json.loads((labels / "labels.json").read_text())
    return {"mode": "sae", "dictionary": args.dictionary, "n_latents": args.n_latents, "explainer": args.explainer,
            "judge": args.judge, "seconds_first": round(first, 1), "seconds_rerun_from_cache": round(second, 1),
            "rerun_identical": before["latents"] == after["latents"] and before["summary"] == after["summary"],
            "summary": before["summary"], "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("planted", "sae"))
    ap.add_argument("--n-latents", type=int, default=None)
    ap.add_argument("--judge-examples", type=int, default=10)
    ap.add_argument("--dictionary", default="")
    ap.add_argument("--explainer", default="rule")
    ap.add_argument("--judge", default="rule")
    ap.add_argument("--labels", default="")
    ap.add_argument("--cache", default="")
    ap.add_argument("--keep", action="store_true", help="sae: keep an existing labels directory (its cache)")
    args = ap.parse_args()
    if args.n_latents is None:
        args.n_latents = 24 if args.mode == "planted" else 200
    if args.mode == "sae" and not args.dictionary:
        sys.exit("sae needs --dictionary DIR")
    result = planted(args) if args.mode == "planted" else sae(args)
    print(json.dumps(result, indent=2, default=str))
    out = ROOT / "benchmarks" / "results" / f"explain_{args.mode}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
