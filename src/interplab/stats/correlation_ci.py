"""Bootstrap confidence interval for a correlation coefficient.

Pairs ``(x_i, y_i)`` are resampled together (the "pairs" bootstrap; Efron & Tibshirani 1993,
the law-school correlation example), the coefficient is computed on every resample at once, and
the limits come from the percentile or BCa rules (``_interval``; Efron 1987), the jackknife for
BCa's acceleration leaving out one pair at a time.

A resample can be constant in x or y (likely only for small n with repeated values); its
coefficient is undefined and it is dropped, with a log message saying how many were.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from interplab.core.errors import ConfigError, InputError, choices
from interplab.stats._interval import interval
from interplab.stats._shapes import Observations
from interplab.stats._validate import check_choice, check_confidence, check_count
from interplab.stats.bootstrap import CI, METHODS, leave_one_out_indices, resample_indices
from interplab.stats.correlation import (
    batched_kendall_tau,
    batched_pearson,
    batched_spearman,
    checked_pair,
    kendall_tau,
    pearson,
    spearman,
)

logger = logging.getLogger(__name__)

Correlation = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The public functions raise on constant inputs; on resamples we use their NaN-returning twins.
BY_NAME: dict[str, Correlation] = {
    "pearson": batched_pearson,
    "spearman": batched_spearman,
    "kendall": batched_kendall_tau,
}
TWINS: dict[Correlation, Correlation] = {
    pearson: batched_pearson,
    spearman: batched_spearman,
    kendall_tau: batched_kendall_tau,
}


def _on_rows(fn: Correlation, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``fn`` on rows ``[m, n]`` of paired observations, checked to give ``[m]`` values."""
    out = fn(x, y)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0],):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"fn returned {got} for inputs of shape {tuple(x.shape)}; it must correlate along "
            f"the last dim and return one value per row, shape ({x.shape[0]},), as pearson does."
        )
    return out.to(torch.float64)


def correlation_ci(
    x: Observations,
    y: Observations,
    fn: str | Correlation = pearson,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    method: str = "bca",
    seed: int = 0,
) -> CI:
    """Bootstrap CI of the correlation ``fn(x, y)`` of paired 1-D observations.

    ``fn`` is pearson, spearman, kendall_tau (or their names 'pearson', 'spearman',
    'kendall'), or any ``fn(x [m, n], y [m, n]) -> [m]`` correlating along the last dim.
    Returns a ``CI`` of scalar tensors.
    """
    if isinstance(fn, str):
        if fn not in BY_NAME:
            raise ConfigError(f"unknown correlation {fn!r}. Valid choices: {choices(BY_NAME)}, or a callable.")
        batched = BY_NAME[fn]
    elif callable(fn):
        batched = TWINS.get(fn, fn)
    else:
        raise ConfigError(f"fn must be a correlation function or its name; got {type(fn).__name__}.")
    check_count(n_resamples, "n_resamples", 2)
    confidence = check_confidence(confidence)
    check_choice(method, "method", METHODS)
    x, y = checked_pair(x, y)
    if x.dim() != 1:
        raise InputError(f"correlation_ci takes 1-D x and y [n]; got shape {tuple(x.shape)}.")
    n = x.shape[0]
    estimate = _on_rows(batched, x[None], y[None])[0]
    idx = resample_indices(n, n_resamples, seed).to(x.device)
    reps = _on_rows(batched, x[idx], y[idx])
    ok = torch.isfinite(reps)
    if not bool(ok.all()):
        if not bool(ok.any()):
            raise InputError(
                "the correlation is undefined on every bootstrap resample (x or y constant in "
                "each); there is too little variation for an interval. Collect more samples."
            )
        logger.info("correlation_ci: dropped %d of %d resamples with a constant x or y", int((~ok).sum()), n_resamples)
        reps = reps[ok]
    jack = None
    if method == "bca":
        loo = leave_one_out_indices(n).T.to(x.device)
        jack = _on_rows(batched, x[loo], y[loo])
        jack = jack[torch.isfinite(jack)]
        if jack.numel() < 2:  # no usable jackknife: no acceleration
            jack = torch.zeros(2, dtype=torch.float64, device=x.device)
        jack = jack[:, None]
    low, high = interval(estimate[None], reps[:, None], jack, confidence, method)
    return CI(estimate=estimate, low=low[0], high=high[0], confidence=confidence, method=method, n=n)
