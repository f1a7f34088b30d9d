"""Benjamini-Hochberg control of the false discovery rate over all cells of a sweep.

A sweep tests hundreds of cells (layers x positions, heads); at ``alpha = 0.05`` per cell, one
in twenty null cells lights up by chance. The step-up procedure of Benjamini & Hochberg (1995,
"Controlling the false discovery rate", JRSS B 57:289) sorts the ``m`` p-values
``p_(1) <= ... <= p_(m)`` and rejects the ``k`` smallest, ``k`` the largest ``i`` with
``p_(i) <= i alpha / m``; the expected share of false discoveries among the rejections is then
at most ``alpha`` for independent or positively dependent tests (Benjamini & Yekutieli 2001).

The adjusted p-value (q-value) of ``p_(i)`` is ``min_{j >= i} min(1, m p_(j) / j)``: the
smallest ``alpha`` at which that cell would be rejected. It is monotone in ``p``.
"""

from __future__ import annotations

import math

import torch

from interplab.core.errors import InputError
from interplab.stats._shapes import CellMask, Cells
from interplab.stats._validate import check_confidence


def benjamini_hochberg(
    p: Cells, alpha: float = 0.05
) -> tuple[CellMask, Cells]:
    """``(reject, q)`` for p-values of any shape, all cells forming one family.

    ``reject`` follows the step-up rule ``p_(i) <= i alpha / m`` (so it agrees with ``q <= alpha``
    up to rounding at the boundary); ``q`` holds the BH-adjusted p-values as float64.
    """
    if not isinstance(p, torch.Tensor):
        p = torch.as_tensor(p)
    alpha = check_confidence(alpha, "alpha")
    p = p.detach().to(torch.float64)
    if p.numel() == 0:
        return torch.zeros_like(p, dtype=torch.bool), p.clone()
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise InputError(
            "p-values must lie in [0, 1] with no NaN; got values outside it "
            f"(min {float(p.nan_to_num(-1).min()):g}, max {float(p.nan_to_num(2).max()):g}). "
            "Drop cells that were not tested instead of passing NaN."
        )
    flat = p.reshape(-1)
    m = flat.numel()
    order = flat.argsort(stable=True)
    ranked = flat[order]
    i = torch.arange(1, m + 1, dtype=torch.float64, device=p.device)
    scaled = (ranked * m / i).clamp(max=1.0)
    # Running minimum from the largest p-value down: q_(i) = min over j >= i.
    q_sorted = scaled.flip(0).cummin(0).values.flip(0)
    passed = ranked <= alpha * i / m
    k = int(passed.nonzero().max()) + 1 if bool(passed.any()) else 0
    reject_sorted = torch.arange(m, device=p.device) < k
    q = torch.empty_like(flat)
    q[order] = q_sorted
    reject = torch.empty_like(flat, dtype=torch.bool)
    reject[order] = reject_sorted
    return reject.reshape(p.shape), q.reshape(p.shape)


def cells_needed(p_min: float, n_tests: int, alpha: float = 0.05) -> int | None:
    """How many of ``n_tests`` cells must all reach ``p_min`` before Benjamini–Hochberg lets
    any of them pass at level ``alpha`` (None when none can: ``p_min >= alpha``). A cell with
    rank k passes when p <= k·alpha / m, so k cells at p_min pass once k >= p_min·m / alpha."""
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be a number strictly between 0 and 1, got {alpha}.")
    if p_min >= alpha:
        return None
    return max(1, math.ceil(p_min * n_tests / alpha - 1e-12))
