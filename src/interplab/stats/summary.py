"""One call from per-prompt effects to everything a results table reports about them.

``summarize(samples [n_prompts, *cells])`` bundles, per cell: the mean effect with its
bootstrap CI (BCa by default; ``bootstrap``), a sign-flip permutation p-value against zero
(``permutation``), the Benjamini-Hochberg q-value across all cells (``fdr``) and Hedges' g_z
(``effect_size``). The rationale is the "new statistics" reporting of Cumming 2014 (Psychol.
Sci. 25:7): an estimate with its interval and a standardised size, with the tests corrected
for the number of cells a sweep looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

from interplab.stats._shapes import CellMask, Cells, Samples
from interplab.stats._validate import as_samples
from interplab.stats.bootstrap import CI, bootstrap_ci
from interplab.stats.effect_size import hedges_g
from interplab.stats.fdr import benjamini_hochberg
from interplab.stats.permutation import paired_permutation_test


@dataclass(frozen=True, eq=False)
class EffectSummary:
    """Per-cell summary of per-sample effects. Tensors are float64 (``significant``: bool)
    with the shape of the cells."""

    mean: Cells
    """Mean effect over the samples."""
    low: Cells
    """Lower limit of the bootstrap CI of the mean."""
    high: Cells
    """Upper limit of the bootstrap CI of the mean."""
    p: Cells
    """Sign-flip permutation p-value of the mean against 0."""
    q: Cells
    """Benjamini-Hochberg adjusted p-value, over all cells."""
    significant: CellMask
    """Cells the BH procedure rejects at ``alpha``."""
    effect_size: Cells
    """Hedges' g_z: mean over standard deviation, small-sample corrected."""
    n: int
    """Number of samples per cell."""
    confidence: float
    """Nominal coverage of the CI."""
    method: str
    """CI method: 'bca' or 'percentile'."""
    alpha: float
    """False discovery rate the ``significant`` mask controls."""

    @property
    def ci(self) -> CI:
        return CI(self.mean, self.low, self.high, self.confidence, self.method, self.n)


def summarize(
    samples: Samples,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "bca",
    n_resamples: int = 2000,
    n_permutations: int = 10000,
    alternative: str = "two-sided",
    alpha: float = 0.05,
    null: float = 0.0,
) -> EffectSummary:
    """Mean, CI, p, q and effect size of per-sample effects ``[n, *cells]`` (e.g. one per prompt).

    ``seed`` drives both the bootstrap and the permutation draws; ``alternative`` is the
    permutation test's ('two-sided', 'greater', 'less'); ``alpha`` the FDR level. ``null`` is
    the value of "no effect" that p, q and the effect size test against (e.g. 1 for noising
    patching, where the clean run is the base); mean and CI stay on the samples' own scale.
    """
    x = as_samples(samples) - null
    ci = bootstrap_ci(x, "mean", n_resamples=n_resamples, confidence=confidence, method=method, seed=seed)
    p = paired_permutation_test(x, None, n_permutations=n_permutations, seed=seed, alternative=alternative)
    significant, q = benjamini_hochberg(p, alpha=alpha)
    return EffectSummary(
        mean=ci.estimate + null,
        low=ci.low + null,
        high=ci.high + null,
        p=p,
        q=q,
        significant=significant,
        effect_size=hedges_g(x),
        n=ci.n,
        confidence=ci.confidence,
        method=method,
        alpha=alpha,
    )
