"""Statistics every analysis reports, on plain tensors, vectorised over a sweep's cells.

Samples go along dim 0 (one row per prompt), cells in the remaining dims; results have the
cells' shape and are float64. Randomness comes from a seeded CPU generator, so the same seed
gives the same numbers on any device.

* ``bootstrap_ci`` -> ``CI``: percentile or BCa intervals (Efron 1987).
* ``paired_permutation_test``: sign-flip p-values, exact for small n (Phipson & Smyth 2010).
* ``benjamini_hochberg``: FDR control and q-values across cells (Benjamini & Hochberg 1995).
* ``cohens_d``, ``hedges_g``: paired / one-sample standardised effect sizes.
* ``summarize`` -> ``EffectSummary``: all of the above from per-prompt effects in one call.
* ``pearson``, ``spearman``, ``kendall_tau`` (tau-b) and ``correlation_ci``.
* ``auroc`` (exact Mann–Whitney, ties one half) and ``auroc_ci`` (bootstrap over items).
"""

from interplab.stats.auroc import auroc, auroc_ci
from interplab.stats.bootstrap import CI, bootstrap_ci
from interplab.stats.correlation import kendall_tau, pearson, spearman
from interplab.stats.correlation_ci import correlation_ci
from interplab.stats.effect_size import cohens_d, hedges_g
from interplab.stats.fdr import benjamini_hochberg, cells_needed
from interplab.stats.permutation import paired_permutation_test, smallest_p
from interplab.stats.summary import EffectSummary, summarize

__all__ = [
    "cells_needed", "smallest_p",
    "CI",
    "EffectSummary",
    "auroc",
    "auroc_ci",
    "benjamini_hochberg",
    "bootstrap_ci",
    "cohens_d",
    "correlation_ci",
    "hedges_g",
    "kendall_tau",
    "paired_permutation_test",
    "pearson",
    "spearman",
    "summarize",
]
