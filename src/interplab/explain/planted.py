"""Planted ground truth for feature labelling: latents that fire on a known set of tokens.

``token_set_latents`` picks ``n_latents`` disjoint token sets from tokens that occur often
enough in the given contexts that every latent fires many times: a token qualifies when it is in
between ``min_frac`` and ``max_frac`` of the contexts, is not a special token, decodes to a
non-blank string that no other token decodes to. Qualifying tokens are shuffled (seeded) and
dealt out in order, each set's size drawn uniformly from ``set_size`` (inclusive).

``token_set_f1`` scores a label against a true set: the label's tokens (``rules.label_tokens``)
vs the true set's strings, F1 = 2|P ∩ T| / (|P| + |T|).

``planted_check`` runs the whole loop on such latents — sample, rule explainer, rule judge
(detection and fuzzing) with the shuffled and random controls — and returns a JSON-ready report.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from interplab.core.errors import InputError
from interplab.explain.rules import RuleExplainer, RuleJudge, label_tokens
from interplab.explain.sampling import SampleConfig, TokenSetLatents, TokenStrings, sample
from interplab.explain.scoring import detection, fuzzing, score_with_controls, summarize

__all__ = ["planted_check", "token_set_f1", "token_set_latents"]


def token_set_latents(tokenizer_or_vocab, contexts: Tensor, n_latents: int = 24, set_size: tuple[int, int] = (3, 8),
                      seed: int = 0, min_frac: float = 0.02, max_frac: float = 0.12,
                      special_ids: Sequence[int] | None = None) -> tuple[TokenSetLatents, list[set[int]]]:
    """``n_latents`` planted token-set latents over ``contexts`` (see the module docstring), and
    their true token-id sets. Raises when too few tokens qualify."""
    lo, hi = set_size
    if not 1 <= lo <= hi:
        raise InputError(f"set_size must be (low, high) with 1 <= low <= high, got {set_size}.")
    strings = TokenStrings(tokenizer_or_vocab)
    n_ctx = contexts.shape[0]
    doc_freq = Counter()
    for row in contexts.tolist():
        doc_freq.update(set(row))
    if special_ids is None:
        special_ids = getattr(tokenizer_or_vocab, "all_special_ids", ()) or ()
    special = set(int(i) for i in special_ids)
    by_string = Counter(strings(t) for t in doc_freq)
    ok = sorted(t for t, f in doc_freq.items()
                if min_frac * n_ctx <= f <= max_frac * n_ctx and t not in special
                and strings(t).strip() and by_string[strings(t)] == 1)
    rng = random.Random(f"planted:{seed}")
    rng.shuffle(ok)
    sizes = [rng.randint(lo, hi) for _ in range(n_latents)]
    if sum(sizes) > len(ok):
        raise InputError(f"Only {len(ok)} tokens are in {min_frac:.0%}..{max_frac:.0%} of the {n_ctx} contexts; "
                         f"{n_latents} sets of sizes {set_size} need {sum(sizes)}. Use more contexts, fewer or "
                         "smaller sets, or a wider frequency band.")
    sets, at = [], 0
    for size in sizes:
        sets.append(set(ok[at: at + size]))
        at += size
    return TokenSetLatents(sets), sets


def token_set_f1(label: str, true_set: set[int], tokenizer_or_vocab) -> float:
    """F1 of the label's token strings against the true set's strings."""
    strings = TokenStrings(tokenizer_or_vocab)
    pred, true = set(label_tokens(label)), {strings(t) for t in true_set}
    return 2 * len(pred & true) / (len(pred) + len(true)) if pred or true else 1.0


def planted_check(tokenizer_or_vocab, contexts: Tensor, n_latents: int = 24, seed: int = 0,
                  cfg: SampleConfig | None = None, explainer=None, judge=None, set_size: tuple[int, int] = (3, 8),
                  **select) -> dict:
    """Plant token-set latents in ``contexts``, explain and score them with controls; a report:
    per latent the true tokens, the label, its F1 and its detection / fuzzing scores with
    controls; overall the mean and minimum F1 and ``summarize`` of each scorer."""
    cfg = cfg or SampleConfig(seed=seed)
    explainer = explainer or RuleExplainer()
    judge = judge or RuleJudge()
    source, sets = token_set_latents(tokenizer_or_vocab, contexts, n_latents, set_size, seed, **select)
    samples = sample(source, contexts, tokenizer_or_vocab, cfg)
    labels = {i: explainer.explain(samples[i]) for i in source.latents}
    strings = TokenStrings(tokenizer_or_vocab)
    f1 = {i: token_set_f1(labels[i], sets[i], tokenizer_or_vocab) for i in source.latents}
    scored = {name: score_with_controls(fn, judge, labels, samples, seed=seed)
              for name, fn in (("detection", detection), ("fuzzing", fuzzing))}
    f1s = torch.tensor(list(f1.values()), dtype=torch.float64)
    return {
        "n_latents": n_latents, "n_contexts": int(contexts.shape[0]), "ctx_len": int(contexts.shape[1]),
        "f1_mean": float(f1s.mean()), "f1_min": float(f1s.min()),
        "summary": {name: summarize(res, seed=seed) for name, res in scored.items()},
        "latents": [{"latent": i, "true": sorted(strings(t) for t in sets[i]), "label": labels[i], "f1": f1[i],
                     "density": samples[i].density, "notes": samples[i].notes,
                     **{name: {c: (res[i][c].to_dict() if c in ("score", "shuffled", "random") else res[i][c])
                               for c in res[i]} for name, res in scored.items()}}
                    for i in source.latents],
    }
