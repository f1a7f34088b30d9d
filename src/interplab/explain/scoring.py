"""Scoring explanations with a judge, and the controls every score is read against.

* ``detection``: the judge says, per scoring example (``score_pos`` + ``score_neg``), whether
  the latent fires in it; balanced accuracy at threshold 0.5 (a prediction >= 0.5 says "fires")
  and AUROC of the judge's probabilities.
* ``fuzzing`` (Paulo et al. 2024, "Automatically interpreting millions of features in LLMs",
  delphi's fuzzing): per activating scoring example, one copy with its firing tokens marked
  (label 1) and one with as many random non-firing positions marked (label 0; skipped when the
  window has no non-firing position); per non-activating example, one copy with random marks
  (as many as an activating example of this latent has, drawn from them; label 0). The judge
  says whether the marks are where the latent fires.

Intervals (95% by default) are percentile bootstraps over examples: balanced accuracy resamples
the positives and the negatives separately (so both classes are always present), the AUROC uses
``stats.auroc.auroc_ci``. A score with no positive or no negative example is NaN.

Controls: the same scorer and judge on (a) another latent's explanation (``shuffled_explanation``,
a seeded derangement of the latents) and (b) a rule label of random tokens
(``random_explanation``). ``score_with_controls`` scores a dict of explanations with both;
``summarize`` gives the means over latents, the mean gap to each control with a bootstrap CI
over latents, and a paired permutation test (two-sided) of score vs control over latents.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from interplab.core.errors import InputError
from interplab.explain.rules import format_label, parse_label
from interplab.explain.types import Example, Judge, LatentSample

__all__ = ["Score", "balanced_accuracy", "detection", "fuzzing", "random_explanation", "score_with_controls",
           "shuffled_explanation", "summarize"]

NAN = float("nan")


@dataclass
class Score:
    """One explanation's score under one scorer and judge (plain floats and lists)."""

    metric: str  # "detection" | "fuzzing"
    balanced_accuracy: float
    ba_low: float
    ba_high: float
    auroc: float
    auroc_low: float
    auroc_high: float
    n_pos: int
    n_neg: int
    confidence: float = 0.95
    judge: str = ""
    explanation: str = ""
    predictions: list[float] = field(default_factory=list)  # the judge's probabilities, per item
    labels: list[int] = field(default_factory=list)  # 1: the latent fires / the marks are right

    def to_dict(self) -> dict:
        """As a dict, NaN written as None (strict JSON)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def balanced_accuracy(predictions: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> float:
    """Mean of the true-positive and true-negative rates, predicting 1 where p >= threshold;
    NaN when a class is absent."""
    pos = [p >= threshold for p, y in zip(predictions, labels, strict=True) if y]
    neg = [p < threshold for p, y in zip(predictions, labels, strict=True) if not y]
    if not pos or not neg:
        return NAN
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


def _score(metric: str, judge: Judge, explanation: str, preds: list[float], labels: list[int], seed: int,
           n_resamples: int, confidence: float) -> Score:
    from interplab.stats.auroc import auroc_ci

    n_pos, n_neg = sum(labels), len(labels) - sum(labels)
    if len(preds) != len(labels):
        raise InputError(f"The judge {getattr(judge, 'name', judge)!r} gave {len(preds)} answers for {len(labels)} items.")
    preds = [float(p) for p in preds]
    ba = balanced_accuracy(preds, labels)
    ba_low = ba_high = au = au_low = au_high = NAN
    if n_pos and n_neg:
        p, y = torch.tensor(preds, dtype=torch.float64), torch.tensor(labels, dtype=torch.bool)
        hit_pos, hit_neg = (p[y] >= 0.5).double(), (p[~y] < 0.5).double()
        gen = torch.Generator().manual_seed(seed)
        reps = (hit_pos[torch.randint(n_pos, (n_resamples, n_pos), generator=gen)].mean(1)
                + hit_neg[torch.randint(n_neg, (n_resamples, n_neg), generator=gen)].mean(1)) / 2
        alpha = (1 - confidence) / 2
        q = torch.quantile(reps, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
        ba_low, ba_high = float(q[0]), float(q[1])
        ci = auroc_ci(p, y, n_resamples=n_resamples, confidence=confidence, seed=seed)
        au, au_low, au_high = float(ci.estimate), float(ci.low), float(ci.high)
    return Score(metric, ba, ba_low, ba_high, au, au_low, au_high, n_pos, n_neg, confidence,
                 getattr(judge, "name", ""), explanation, preds, labels)


def detection(judge: Judge, explanation: str, sample: LatentSample, seed: int = 0, n_resamples: int = 1000,
              confidence: float = 0.95) -> Score:
    """Detection score of ``explanation`` on ``sample``'s scoring examples (see the module docstring)."""
    examples = [*sample.score_pos, *sample.score_neg]
    labels = [1] * len(sample.score_pos) + [0] * len(sample.score_neg)
    preds = judge.detect(explanation, examples) if examples else []
    return _score("detection", judge, explanation, list(preds), labels, seed, n_resamples, confidence)


def fuzz_items(sample: LatentSample, seed: int = 0) -> tuple[list[Example], list[list[int]], list[int]]:
    """The fuzzing items of a sample: (examples, marked positions, labels), deterministic in
    ``(seed, sample.latent)``."""
    rng = random.Random(f"fuzz:{seed}:{sample.latent}")
    examples, marked, labels = [], [], []
    counts = []
    for ex in sample.score_pos:
        right = [i for i, a in enumerate(ex.acts) if a != 0]
        other = [i for i, a in enumerate(ex.acts) if a == 0]
        counts.append(len(right))
        examples.append(ex), marked.append(right), labels.append(1)
        if other:
            examples.append(ex), marked.append(sorted(rng.sample(other, min(len(right), len(other))))), labels.append(0)
    for ex in sample.score_neg:
        if not ex.tokens:
            continue
        k = min(rng.choice(counts) if counts else 1, len(ex.tokens))
        examples.append(ex), marked.append(sorted(rng.sample(range(len(ex.tokens)), k))), labels.append(0)
    return examples, marked, labels


def fuzzing(judge: Judge, explanation: str, sample: LatentSample, seed: int = 0, n_resamples: int = 1000,
            confidence: float = 0.95) -> Score:
    """Fuzzing score of ``explanation`` on ``sample`` (see the module docstring)."""
    examples, marked, labels = fuzz_items(sample, seed)
    preds = judge.fuzz(explanation, examples, marked) if examples else []
    return _score("fuzzing", judge, explanation, list(preds), labels, seed, n_resamples, confidence)


# -- controls ------------------------------------------------------------------------------------
def _derangement(keys: list, seed: int) -> dict:
    """A seeded derangement of ``keys`` (Sattolo's algorithm: one cycle, so no fixed point)."""
    rng = random.Random(f"derange:{seed}")
    perm = list(range(len(keys)))
    for i in range(len(perm) - 1, 0, -1):
        j = rng.randrange(i)
        perm[i], perm[j] = perm[j], perm[i]
    return {keys[i]: keys[perm[i]] for i in range(len(keys))}


def shuffled_explanation(explanations: Mapping[int, str], latent: int, seed: int = 0) -> str:
    """Another latent's explanation: ``latent``'s image under a derangement of the sorted latent
    ids seeded with ``seed`` (the same for every latent of one call set)."""
    if len(explanations) < 2:
        raise InputError("The shuffled-explanation control needs explanations of at least 2 latents.")
    return explanations[_derangement(sorted(explanations), seed)[latent]]


def random_explanation(vocab_strings: Sequence[str], seed: int, n_tokens: int) -> str:
    """A rule label (``rules.format_label``) of ``n_tokens`` distinct random token strings."""
    pool = sorted(set(vocab_strings))
    if not pool:
        raise InputError("The random-explanation control needs a non-empty vocabulary.")
    return format_label(random.Random(f"random:{seed}").sample(pool, min(max(n_tokens, 1), len(pool))))


Scorer = Callable[..., Score]


def score_with_controls(scorer_fn: Scorer, judge: Judge, explanations: Mapping[int, str],
                        samples: Mapping[int, LatentSample], vocab_strings: Sequence[str] | None = None,
                        seed: int = 0, n_random_tokens: int | None = None) -> dict[int, dict]:
    """Per latent: ``{"score", "shuffled", "random": Score, "gap_shuffled", "gap_random": float}``,
    the gaps in balanced accuracy (score minus control).

    ``vocab_strings``: the random control's token pool; by default every distinct token string in
    the samples. ``n_random_tokens``: its label's size; by default as many tokens as the
    explanation names (5 for a label that is not a rule label)."""
    if vocab_strings is None:
        vocab_strings = sorted({t for s in samples.values()
                                for ex in (*s.explain, *s.explain_neg, *s.score_pos, *s.score_neg) for t in ex.tokens})
    out = {}
    for latent in sorted(explanations):
        expl, smp = explanations[latent], samples[latent]
        parsed = parse_label(expl)
        n_rand = n_random_tokens or (len(parsed[0]) + len(parsed[1]) if parsed else 5) or 1
        score = scorer_fn(judge, expl, smp, seed=seed)
        shuffled = scorer_fn(judge, shuffled_explanation(explanations, latent, seed), smp, seed=seed)
        rand = scorer_fn(judge, random_explanation(vocab_strings, seed * 1_000_003 + latent, n_rand), smp, seed=seed)
        out[latent] = {"score": score, "shuffled": shuffled, "random": rand,
                       "gap_shuffled": score.balanced_accuracy - shuffled.balanced_accuracy,
                       "gap_random": score.balanced_accuracy - rand.balanced_accuracy}
    return out


def summarize(results: Mapping[int, dict], seed: int = 0, n_resamples: int = 2000) -> dict:
    """Over latents (those with a defined score and controls): mean balanced accuracy and AUROC of
    the score and of each control; per control the mean gap with a 95% bootstrap CI over latents
    (BCa; NaN with under 2 latents) and a two-sided paired permutation p-value of score vs control,
    in balanced accuracy (``gap_<control>``) and in AUROC (``gap_<control>_auroc``: threshold-free,
    so it still measures a judge whose P(Yes) never crosses 0.5)."""
    from interplab.stats import bootstrap_ci, paired_permutation_test

    keep = [k for k, r in results.items()
            if not any(math.isnan(r[c].balanced_accuracy) for c in ("score", "shuffled", "random"))]
    out: dict = {"n_latents": len(keep), "n_undefined": len(results) - len(keep)}

    def col(c: str, m: str = "balanced_accuracy") -> torch.Tensor:
        return torch.tensor([getattr(results[k][c], m) for k in keep], dtype=torch.float64)

    for c in ("score", "shuffled", "random"):
        out[f"mean_{c}"] = float(col(c).mean()) if keep else NAN
        out[f"mean_{c}_auroc"] = float(col(c, "auroc").nanmean()) if keep else NAN
    for metric, suffix in (("balanced_accuracy", ""), ("auroc", "_auroc")):
        for c in ("shuffled", "random"):
            a, b = col("score", metric), col(c, metric)
            both = ~(a.isnan() | b.isnan())  # AUROC is NaN where the judge's answers tie throughout
            a, b = a[both], b[both]
            gap = a - b
            entry = {"mean": float(gap.mean()) if len(gap) else NAN, "low": NAN, "high": NAN, "p": NAN,
                     "n": len(gap)}
            if len(gap) >= 2:
                ci = bootstrap_ci(gap, n_resamples=n_resamples, seed=seed)
                entry.update(low=float(ci.low), high=float(ci.high), p=float(paired_permutation_test(a, b, seed=seed)))
            out[f"gap_{c}{suffix}"] = entry
    return out
