"""Bootstrap confidence intervals for a statistic of per-sample values, vectorised over cells.

An analysis measures one effect per prompt at every cell of a sweep (layer x position, head,
...), giving ``samples [n, *cells]``. The bootstrap (Efron 1979, "Bootstrap methods: another
look at the jackknife", Ann. Statist. 7:1) resamples the ``n`` rows with replacement; we draw
the row indices once and apply them to every cell, so a whole sweep costs one pass and cells
stay comparable (they are resampled by the same prompts).

Intervals are percentile or BCa (Efron 1987; see ``_interval``). BCa is the default: it is
second-order accurate and corrects the skew that per-prompt effects often have. Assumptions:
rows are independent draws (prompts, not tokens of one prompt), and the statistic is smooth
enough for the bootstrap (means are; extremes like ``max`` are not).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from interplab.core.errors import ConfigError, InputError, choices
from interplab.stats._interval import interval
from interplab.stats._shapes import Cells, Samples
from interplab.stats._validate import (
    as_samples,
    check_choice,
    check_confidence,
    check_count,
    chunk_size,
    generator,
)

METHODS = ("bca", "percentile")

Statistic = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False)
class CI:
    """A confidence interval per cell. Tensors are float64 with the shape of the cells."""

    estimate: Cells
    """The statistic on the original samples."""
    low: Cells
    """Lower limit."""
    high: Cells
    """Upper limit."""
    confidence: float
    """Nominal coverage, e.g. 0.95."""
    method: str
    """How the limits were computed: 'bca' or 'percentile'."""
    n: int
    """Number of samples (rows) the interval rests on."""

    @property
    def width(self) -> torch.Tensor:
        return self.high - self.low

    def excludes(self, value: float = 0.0) -> torch.Tensor:
        """Cells whose interval does not contain ``value`` (bool tensor)."""
        return (self.low > value) | (self.high < value)


def _median(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    # torch.median returns the lower middle value for even n; the usual median averages the two.
    s = x.sort(dim=dim).values
    n = s.shape[dim]
    return (s.select(dim, (n - 1) // 2) + s.select(dim, n // 2)) / 2


NAMED: dict[str, Statistic] = {"mean": torch.mean, "median": _median}


def resolve_statistic(statistic: str | Statistic) -> Statistic:
    """A named statistic ('mean', 'median') or a callable ``fn(x, dim=0)`` taken as is."""
    if callable(statistic):
        return statistic
    if isinstance(statistic, str) and statistic in NAMED:
        return NAMED[statistic]
    raise ConfigError(
        f"unknown statistic {statistic!r}. Valid choices: {choices(NAMED)}, or a callable "
        "fn(x, dim=0) that reduces dim 0 of x and keeps the other dims, like torch.mean."
    )


def apply_statistic(fn: Statistic, x: torch.Tensor) -> torch.Tensor:
    """``fn(x, dim=0)`` checked to return ``x.shape[1:]`` as float64."""
    out = fn(x, dim=0)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x.shape[1:]):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(
            f"statistic returned {got} for input {tuple(x.shape)}; it must reduce dim 0 and keep "
            f"the other dims, returning {tuple(x.shape[1:])} (like torch.mean(x, dim=0)). It is "
            "called with extra batch dims after dim 0, so reduce dim 0 only."
        )
    return out.to(torch.float64)


def resample_indices(n: int, n_resamples: int, seed: int) -> torch.Tensor:
    """Row indices ``[n_resamples, n]`` drawn with replacement; the same seed gives the same rows."""
    return torch.randint(n, (n_resamples, n), generator=generator(seed))


def leave_one_out_indices(n: int) -> torch.Tensor:
    """``[n - 1, n]``: column i lists every row but i (the jackknife samples)."""
    rows = torch.arange(n - 1).view(-1, 1)
    return rows + (rows >= torch.arange(n).view(1, -1)).long()


def replicates(x: torch.Tensor, index: torch.Tensor, fn: Statistic) -> torch.Tensor:
    """``fn`` on the samples picked by each column of ``index [k, m]`` from ``x [n, C]``: [m, C].

    Columns are processed in chunks so ``k * chunk * C`` stays under the memory budget.
    """
    k, m = index.shape
    step = chunk_size(k * x.shape[1])
    return torch.cat([apply_statistic(fn, x[index[:, i : i + step]]) for i in range(0, m, step)])


def bootstrap_ci(
    samples: Samples,
    statistic: str | Statistic = "mean",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    method: str = "bca",
    seed: int = 0,
) -> CI:
    """Bootstrap CI of ``statistic`` over dim 0 of ``samples``, for every cell at once.

    Args:
        samples: per-sample values, samples along dim 0 (``[n_prompts, *cells]``).
        statistic: 'mean', 'median', or ``fn(x, dim=0)`` reducing dim 0 of ``x`` cell by cell
            (it is called on ``[n, batch, cells]`` tensors).
        n_resamples: bootstrap replicates; 2000 is enough for 95% limits (Efron & Tibshirani
            1993, ch. 19), use more for 99%.
        confidence: nominal coverage in (0, 1).
        method: 'bca' (default) or 'percentile'.
        seed: seeds the row resampling; the same seed gives the same interval.

    Cells whose samples are all equal get ``low = high = estimate``.
    """
    x = as_samples(samples)
    fn = resolve_statistic(statistic)
    check_count(n_resamples, "n_resamples", 2)
    confidence = check_confidence(confidence)
    check_choice(method, "method", METHODS)
    n, cells = x.shape[0], x.shape[1:]
    x = x.reshape(n, -1)
    idx = resample_indices(n, n_resamples, seed).to(x.device)
    if fn is torch.mean:
        # Exact shortcut for the mean: a resample's mean is counts @ x / n.
        counts = torch.zeros(n_resamples, n, dtype=torch.float64, device=x.device)
        counts.scatter_add_(1, idx, torch.ones_like(counts))
    lows, highs, ests = [], [], []
    step = chunk_size(n_resamples * max(n, 1) if fn is not torch.mean else n_resamples + n)
    for c in range(0, x.shape[1], step):
        xc = x[:, c : c + step]
        if fn is torch.mean:
            est = xc.mean(0)
            reps = counts @ xc / n
            jack = (xc.sum(0, keepdim=True) - xc) / (n - 1) if method == "bca" else None
        else:
            est = apply_statistic(fn, xc)
            reps = replicates(xc, idx.T, fn)
            jack = replicates(xc, leave_one_out_indices(n).to(x.device), fn) if method == "bca" else None
        low, high = interval(est, reps, jack, confidence, method)
        # Constant cells are points even if rounding made their replicates differ by an ulp.
        constant = xc.amax(0) == xc.amin(0)
        ests.append(est)
        lows.append(torch.where(constant, est, low))
        highs.append(torch.where(constant, est, high))
    empty = x.new_empty(0)
    return CI(
        estimate=torch.cat([empty, *ests]).reshape(cells),
        low=torch.cat([empty, *lows]).reshape(cells),
        high=torch.cat([empty, *highs]).reshape(cells),
        confidence=confidence,
        method=method,
        n=n,
    )
