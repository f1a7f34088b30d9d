"""Standardised effect sizes for paired (or one-sample) designs, vectorised over cells.

A p-value says an effect is there; an effect size says how big it is next to its noise, so
cells and analyses with different units can be compared.

* Cohen's ``d_z`` = mean of the differences / their sample standard deviation (``n - 1``
  denominator) (Cohen 1988, *Statistical Power Analysis*; Lakens 2013, "Calculating and
  reporting effect sizes", Front. Psychol. 4:863).
* Hedges' ``g_z`` = ``J(n - 1) * d_z`` with the exact small-sample correction
  ``J(v) = Gamma(v/2) / (sqrt(v/2) Gamma((v-1)/2))`` that makes it unbiased under normality
  (Hedges 1981, "Distribution theory for Glass's estimator", J. Educ. Stat. 6:107);
  ``J`` is about ``1 - 3 / (4v - 1)``.

A cell whose differences are all equal has no spread: its ``d`` is 0 when they are all 0 and
``+-inf`` otherwise (a constant nonzero shift is infinitely many standard deviations).
"""

from __future__ import annotations

import math

import torch

from interplab.stats._shapes import Cells, Samples
from interplab.stats._validate import paired_difference


def _d_of(d: torch.Tensor) -> torch.Tensor:
    mean = d.mean(0)
    # Constant cells are found by their range: their computed sd can be a rounding-sized
    # nonzero, which would turn "no spread" into an enormous finite d.
    flat = d.amax(0) == d.amin(0)
    sd = torch.where(flat, 1.0, d.std(0, correction=1))
    shift = torch.where(d[0] == 0, 0.0, d[0].sign() * torch.inf)
    return torch.where(flat, shift, mean / sd)


def cohens_d(
    a: Samples, b: Samples | None = None
) -> Cells:
    """Cohen's ``d_z`` of ``a - b`` (paired) or of ``a`` against 0, per cell, float64."""
    return _d_of(paired_difference(a, b))


def hedges_correction(dof: int) -> float:
    """Hedges' exact bias correction ``J(dof)``; 0 for ``dof = 1`` (where ``d`` has no mean)."""
    if dof <= 1:
        return 0.0
    return math.exp(math.lgamma(dof / 2) - math.lgamma((dof - 1) / 2)) / math.sqrt(dof / 2)


def hedges_g(
    a: Samples, b: Samples | None = None
) -> Cells:
    """Hedges' ``g_z``: Cohen's ``d_z`` times the small-sample correction ``J(n - 1)``."""
    diff = paired_difference(a, b)
    d = _d_of(diff)
    return torch.where(torch.isinf(d), d, d * hedges_correction(diff.shape[0] - 1))
