"""Confidence limits from bootstrap replicates: percentile and BCa, vectorised over cells.

Percentile: the ``(1-c)/2`` and ``(1+c)/2`` quantiles of the replicates (Efron & Tibshirani
1993, *An Introduction to the Bootstrap*, ch. 13).

BCa (bias-corrected and accelerated; Efron 1987, "Better bootstrap confidence intervals",
JASA 82:171) moves those two quantile levels to

    alpha_k = Phi(z0 + (z0 + z_k) / (1 - a (z0 + z_k)))

with ``z0 = Phi^-1(share of replicates below the estimate)`` correcting median bias and the
acceleration ``a = sum(d^3) / (6 sum(d^2)^1.5)``, ``d = mean(jack) - jack``, from the jackknife
values (Efron & Tibshirani 1993, sec. 14.3). Ties with the estimate count half, as in
``scipy.stats.bootstrap``, so discrete statistics (a median) do not get a spurious bias.

Quantiles interpolate linearly between order statistics (Hyndman & Fan 1996 type 7, numpy's
default), with a per-cell level so BCa's adjusted levels need no loop.
"""

from __future__ import annotations

import torch


def quantile_sorted(sorted_reps: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Type-7 quantile of replicates ``[B, C]`` (sorted along dim 0) at per-cell ``level [C]``."""
    b = sorted_reps.shape[0]
    pos = level.clamp(0.0, 1.0) * (b - 1)
    lo = pos.floor().long().clamp(0, b - 1)
    hi = (lo + 1).clamp(max=b - 1)
    frac = pos - lo.to(pos.dtype)
    v_lo = sorted_reps.gather(0, lo.unsqueeze(0)).squeeze(0)
    v_hi = sorted_reps.gather(0, hi.unsqueeze(0)).squeeze(0)
    return v_lo + frac * (v_hi - v_lo)


def acceleration(jack: torch.Tensor) -> torch.Tensor:
    """BCa acceleration from jackknife values ``[n, C]``; 0 where the jackknife has no spread."""
    d = jack.mean(0, keepdim=True) - jack
    num = (d**3).sum(0)
    den = 6.0 * (d**2).sum(0) ** 1.5
    safe = den > 0
    return torch.where(safe, num / torch.where(safe, den, 1.0), torch.zeros_like(num))


def bias_correction(estimate: torch.Tensor, reps: torch.Tensor) -> torch.Tensor:
    """``z0`` from the share of replicates ``[B, C]`` below the estimate ``[C]`` (ties half).

    The share is clamped to ``[1/(2B), 1 - 1/(2B)]``: an estimate outside every replicate
    (possible only for odd statistics) would otherwise give an infinite ``z0`` and a NaN limit.
    """
    b = reps.shape[0]
    below = (reps < estimate).sum(0) + (reps <= estimate).sum(0)
    share = (below.to(torch.float64) / (2 * b)).clamp(0.5 / b, 1 - 0.5 / b)
    return torch.special.ndtri(share)


def interval(
    estimate: torch.Tensor,
    reps: torch.Tensor,
    jack: torch.Tensor | None,
    confidence: float,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) per cell from the estimate ``[C]``, replicates ``[B, C]`` and, for BCa, the
    jackknife values ``[n, C]``. Cells whose replicates do not vary get ``low = high = estimate``.
    """
    tail = (1.0 - confidence) / 2.0
    base = torch.tensor([tail, 1.0 - tail], dtype=torch.float64, device=reps.device)
    levels = base.view(2, 1).expand(2, reps.shape[1])
    if method == "bca":
        assert jack is not None
        z0 = bias_correction(estimate, reps)
        a = acceleration(jack)
        zk = torch.special.ndtri(base).view(2, 1)
        num = z0 + zk
        adjusted = torch.special.ndtr(z0 + num / (1.0 - a * num))
        # 1 - a*num == 0 (a huge acceleration) gives inf/inf = NaN: fall back to percentile.
        levels = torch.where(torch.isnan(adjusted), levels, adjusted)
    sorted_reps = reps.sort(dim=0).values
    low = quantile_sorted(sorted_reps, levels[0])
    high = quantile_sorted(sorted_reps, levels[1])
    flat = sorted_reps[0] == sorted_reps[-1]
    low = torch.where(flat, estimate, low)
    high = torch.where(flat, estimate, high)
    return low, high
