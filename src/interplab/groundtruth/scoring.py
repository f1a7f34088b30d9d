"""Scores of a method against planted ground truth, with the statistics that make them claims.

Feature recovery (dictionaries against ``synthetic.FeatureSet`` or a toy model):

* ``mean_max_cosine`` (MMCS; Sharkey, Braun & Millidge 2022, "Taking features out of
  superposition with sparse autoencoders"): for each *true* feature the best signed cosine over
  the learned directions, averaged over the true features; the reverse (each learned direction's
  best true match) is reported alongside, so dead or duplicate latents show up.
* ``hungarian_correlation``: Pearson correlations between every learned latent's activation and
  every true coefficient over the same tokens, then the one-to-one matching that maximises their
  sum (Kuhn 1955, "The Hungarian method for the assignment problem"; solved by scipy's
  ``linear_sum_assignment``, Crouse 2016). Unlike MMCS it scores the *encoder* too and cannot
  credit one latent for several features.
* ``null_control``: the same scores for a randomly initialised dictionary of the same shape,
  the baseline a trained one must beat (random directions in ``R^d`` already have max cosines
  well above 0 when there are many of them).

Probes and attributions: ``probe_recovery`` (|cos| to the planted direction) and ``auroc``
(exact, Mann-Whitney U with ties; ``interplab.stats.auroc``). Uncertainty: ``bootstrap_score`` (a CI over seeds or prompts,
``interplab.stats.bootstrap_ci``) and ``paired_comparison`` (two methods on the same units,
``interplab.stats.paired_permutation_test``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from interplab.core.errors import InputError, MissingDependencyError
from interplab.dictionary.base import DICTIONARIES, Dictionary
from interplab.dictionary.init import initialize
from interplab.stats import CI, bootstrap_ci, paired_permutation_test
from interplab.stats.auroc import auroc as stats_auroc

log = logging.getLogger(__name__)


def _matrix(x, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().cpu().to(torch.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-D tensor; got shape {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{name} contains NaN or infinite values.")
    return x


def _unit_rows(x: Tensor, name: str) -> Tensor:
    norms = x.norm(dim=-1, keepdim=True)
    if bool((norms == 0).any()):
        bad = torch.nonzero(norms.squeeze(-1) == 0).flatten().tolist()[:5]
        raise InputError(f"{name} has all-zero rows {bad}: a direction needs a non-zero vector. "
                         "Drop those rows (e.g. dead latents) before scoring.")
    return x / norms


# -- directions ------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CosineRecovery:
    """How well learned directions cover true ones (see ``mean_max_cosine``)."""

    mmcs: float
    """Mean over true features of the best cosine over learned directions."""
    per_true: Float[Tensor, " n_true"]
    """Best cosine of each true feature."""
    best_learned: Tensor
    """Index of the learned direction achieving it, per true feature."""
    reverse_mmcs: float
    """Mean over learned directions of the best cosine over true features."""
    per_learned: Float[Tensor, " n_learned"]
    """Best cosine of each learned direction."""
    cosines: Float[Tensor, "n_learned n_true"]
    """All cosines (signed unless ``signed=False``)."""
    signed: bool

    def recovered(self, threshold: float = 0.9) -> int:
        """Number of true features whose best cosine exceeds ``threshold``."""
        return int((self.per_true > threshold).sum())


def mean_max_cosine(learned: Float[Tensor, "m d"], true: Float[Tensor, "n d"], signed: bool = True
                    ) -> CosineRecovery:
    """MMCS = ``mean_j max_i cos(learned_i, true_j)``: the mean over TRUE features of the best
    cosine over LEARNED directions; the reverse, ``mean_i max_j``, is reported too.

    Why this orientation: the question is whether each true feature was found, so every true
    feature gets one score and extra learned directions cost nothing (an SAE wider than the truth
    is not penalised here; ``reverse_mmcs`` and ``hungarian_correlation`` catch the waste).

    Why signed: dictionary latents are non-negative (ReLU, TopK) and the true coefficients are
    too, so a decoder row pointing along ``-f`` cannot reconstruct ``f`` and should not count
    as finding it; ``|cos|`` would credit it. Pass ``signed=False`` for methods whose directions
    have no sign (PCA, ICA, probes).

    ``learned [m, d]`` and ``true [n, d]`` need not be normalised; zero rows are refused.
    """
    a = _unit_rows(_matrix(learned, "learned"), "learned")
    b = _unit_rows(_matrix(true, "true"), "true")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"learned directions are {a.shape[1]}-dimensional but the true ones are "
                         f"{b.shape[1]}-dimensional; compare directions in the same space (for a "
                         "dictionary: its decoder rows, in the activation space the features live in).")
    cos = a @ b.T
    if not signed:
        cos = cos.abs()
    per_true, best = cos.max(dim=0)
    per_learned = cos.max(dim=1).values
    return CosineRecovery(float(per_true.mean()), per_true, best, float(per_learned.mean()),
                          per_learned, cos, signed)


def decoder_directions(dictionary: Dictionary) -> Float[Tensor, "d_sae d_out"]:
    """A dictionary's decoder directions in model units: rows of ``W_dec / out_scale``
    (``out_scale`` is a scalar, so this only matters for norms, not for cosines)."""
    return (dictionary.W_dec / dictionary.out_scale).detach().float().cpu()


def probe_recovery(probe_direction: Float[Tensor, " d"], true_direction: Float[Tensor, " d"]) -> float:
    """``|cos(probe, truth)|``: a probe's direction has no meaningful sign (label order is a
    convention), so 1 means the planted direction was found exactly and 0 that it is orthogonal."""
    p = torch.as_tensor(probe_direction).detach().cpu().double().flatten()
    t = torch.as_tensor(true_direction).detach().cpu().double().flatten()
    if p.shape != t.shape:
        raise InputError(f"probe direction has {p.numel()} entries, the true direction {t.numel()}; "
                         "they must live in the same space.")
    if float(p.norm()) == 0 or float(t.norm()) == 0:
        raise InputError("probe_recovery got a zero vector; a direction needs a non-zero vector.")
    return float((p @ t).abs() / (p.norm() * t.norm()))


# -- activations -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class MatchedCorrelation:
    """The optimal one-to-one matching of learned latents to true features by correlation."""

    mean: float
    """Mean correlation over the matched pairs (``min(m, n)`` of them)."""
    matched: Float[Tensor, " n_pairs"]
    """Correlation of each matched pair, in the order of ``true_index``."""
    learned_index: Tensor
    true_index: Tensor
    correlations: Float[Tensor, "m n"]
    """Pearson correlation of every learned latent with every true coefficient (0 where constant)."""


def correlation_matrix(a: Float[Tensor, "t m"], b: Float[Tensor, "t n"]) -> Float[Tensor, "m n"]:
    """Pearson correlation of every column of ``a`` with every column of ``b`` (float64).

    A constant column (a dead latent, a feature never active) has no defined correlation; it
    gets 0, i.e. it explains nothing, so it can be matched but adds nothing to the score.
    """
    ac = a - a.mean(0)
    bc = b - b.mean(0)
    na, nb = ac.norm(dim=0), bc.norm(dim=0)
    den = na[:, None] * nb[None, :]
    r = (ac.T @ bc) / torch.where(den > 0, den, 1.0)
    return torch.where(den > 0, r.clamp(-1.0, 1.0), 0.0)


def hungarian_correlation(learned_acts: Float[Tensor, "tokens m"], true_coeffs: Float[Tensor, "tokens n"]
                          ) -> MatchedCorrelation:
    """Mean Pearson correlation of the best one-to-one pairing of latents with true features.

    ``C[i, j] = corr(learned_acts[:, i], true_coeffs[:, j])`` over the tokens; the matching
    ``pi`` maximises ``sum_j C[pi(j), j]`` over one-to-one assignments (``linear_sum_assignment``
    on ``-C``); the score is the mean of the ``min(m, n)`` matched correlations. Signed, as with
    MMCS: a latent anti-correlated with a feature has not learned it.
    """
    a = _matrix(learned_acts, "learned_acts")
    b = _matrix(true_coeffs, "true_coeffs")
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise InputError(f"learned_acts has {a.shape[0]} tokens and true_coeffs {b.shape[0]}; both must "
                         "hold the same tokens, in the same order, and at least 2 of them.")
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as e:  # pragma: no cover - scipy is a dependency
        raise MissingDependencyError("hungarian_correlation needs scipy: pip install scipy.") from e
    c = correlation_matrix(a, b)
    rows, cols = linear_sum_assignment(c.numpy(), maximize=True)
    li, ti = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
    order = ti.argsort()
    li, ti = li[order], ti[order]
    matched = c[li, ti]
    return MatchedCorrelation(float(matched.mean()), matched, li, ti, c)


def auroc(scores: Float[Tensor, " n"], truth_labels: Tensor) -> float:
    """Exact AUROC = ``U / (n1 n0)`` (``stats.auroc``): the share of (positive, negative) pairs
    the scores order correctly, ties counting one half; an error unless both classes occur."""
    return stats_auroc(scores, truth_labels)


# -- dictionaries ----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RecoveryScore:
    """A dictionary scored against true features: directions, and (given tokens) activations."""

    cosine: CosineRecovery
    correlation: MatchedCorrelation | None

    @property
    def mmcs(self) -> float:
        return self.cosine.mmcs

    @property
    def matched_correlation(self) -> float | None:
        return None if self.correlation is None else self.correlation.mean


def feature_recovery(dictionary: Dictionary, true_directions: Float[Tensor, "n d"],
                     activations: Float[Tensor, "tokens d"] | None = None,
                     coefficients: Float[Tensor, "tokens n"] | None = None) -> RecoveryScore:
    """MMCS of the decoder rows against ``true_directions`` and, when the tokens and their
    true coefficients are given, the Hungarian-matched correlation of ``encode(activations)``."""
    cos = mean_max_cosine(decoder_directions(dictionary), true_directions)
    corr = None
    if (activations is None) != (coefficients is None):
        raise InputError("Pass both activations and their true coefficients (or neither).")
    if activations is not None:
        with torch.no_grad():
            latents = dictionary.encode(activations.to(dictionary.W_enc.device))
        corr = hungarian_correlation(latents, coefficients)
    return RecoveryScore(cos, corr)


def random_dictionary(like: Dictionary, seed: int = 0, activations: Tensor | None = None) -> Dictionary:
    """A fresh dictionary of ``like``'s architecture and shape with random unit decoder rows
    (seeded) and the encoder tied to them, as training starts; the scales and decoder bias are
    set from ``activations`` (as the trainer does before step 0) or copied from ``like``."""
    d = DICTIONARIES.get(like.cfg.arch)(like.cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.randn(d.W_dec.shape, generator=g)
        d.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        if d.W_enc.shape == d.W_dec.T.shape:
            d.W_enc.copy_(d.W_dec.T)
        if activations is not None:
            initialize(d, activations.cpu(), activations.cpu(), "geometric_median", True)
        else:
            for name in ("in_scale", "out_scale", "b_dec"):
                getattr(d, name).copy_(getattr(like, name).detach().cpu())
    return d.eval()


def null_control(like: Dictionary, true_directions: Float[Tensor, "n d"],
                 activations: Float[Tensor, "tokens d"] | None = None,
                 coefficients: Float[Tensor, "tokens n"] | None = None, seed: int = 0) -> RecoveryScore:
    """The null for feature recovery: ``feature_recovery`` of ``random_dictionary(like, seed)``.

    A trained dictionary's score means something only by its distance from this: ``d_sae``
    random directions in ``R^d`` reach a max cosine of roughly ``sqrt(2 ln d_sae / d)`` with any
    fixed vector, which is far from 0 for small ``d``.
    """
    rand = random_dictionary(like, seed, activations)
    return feature_recovery(rand, true_directions, activations, coefficients)


# -- uncertainty -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class ScoreCI:
    """A score measured once per unit (seed or prompt), with a bootstrap CI of its mean."""

    units: tuple
    scores: Float[Tensor, " n_units"]
    ci: CI

    @property
    def mean(self) -> float:
        return float(self.ci.estimate)


def bootstrap_score(fn: Callable[[Any], float], units: Sequence, n_resamples: int = 2000,
                    confidence: float = 0.95, method: str = "bca", seed: int = 0) -> ScoreCI:
    """``fn(unit)`` for every unit (e.g. training seeds, or prompts), and a bootstrap CI of the
    mean over units (``interplab.stats.bootstrap_ci``). Units must be independent replicates:
    seeds of a whole pipeline, not tokens of one run."""
    units = tuple(units)
    if len(units) < 2:
        raise InputError(f"bootstrap_score needs at least 2 units (seeds or prompts) for a CI; got {len(units)}.")
    scores = torch.tensor([float(fn(u)) for u in units], dtype=torch.float64)
    ci = bootstrap_ci(scores, "mean", n_resamples=n_resamples, confidence=confidence, method=method, seed=seed)
    return ScoreCI(units, scores, ci)


@dataclass(frozen=True, eq=False)
class PairedComparison:
    """Method A against method B on the same units."""

    mean_difference: float
    """Mean of ``a - b`` over the units."""
    ci: CI
    """Bootstrap CI of the mean difference."""
    p_value: float
    """Sign-flip permutation p-value of the mean difference being 0."""
    n: int
    alternative: str


def paired_comparison(scores_a, scores_b, n_permutations: int = 10000, seed: int = 0,
                      alternative: str = "two-sided", confidence: float = 0.95) -> PairedComparison:
    """Does A score differently from B on the same units (seeds, prompts)? The mean paired
    difference, its bootstrap CI and the paired permutation test's p-value (exact up to 2**13
    units with the default ``n_permutations``)."""
    a = torch.as_tensor(scores_a, dtype=torch.float64).flatten()
    b = torch.as_tensor(scores_b, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise InputError(f"scores_a has {a.numel()} units and scores_b {b.numel()}; a paired comparison "
                         "needs both methods scored on the same units, in the same order.")
    p = paired_permutation_test(a, b, n_permutations=n_permutations, seed=seed, alternative=alternative)
    ci = bootstrap_ci(a - b, "mean", confidence=confidence, seed=seed)
    return PairedComparison(float((a - b).mean()), ci, float(p), int(a.numel()), alternative)
