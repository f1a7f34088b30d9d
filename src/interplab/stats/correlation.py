"""Correlation coefficients: Pearson, Spearman and Kendall's tau-b.

Analyses correlate per-prompt quantities (an attribution score with the patching effect it
approximates, a probe's score with a behaviour). Each function takes 1-D tensors ``x, y [n]``
or batches ``[..., n]`` (correlated along the last dim) and returns a float64 tensor ``[...]``.

* Pearson's ``r``: covariance over the product of standard deviations (Pearson 1895).
* Spearman's ``rho``: Pearson's ``r`` of the ranks, ties getting their average rank
  (Spearman 1904; Kendall & Gibbons 1990, *Rank Correlation Methods*).
* Kendall's ``tau-b``: ``(n_c - n_d) / sqrt((n_0 - n_x)(n_0 - n_y))``, concordant minus
  discordant pairs, with ``n_x, n_y`` the pairs tied in x or in y (Kendall 1945, "The treatment
  of ties in ranking problems", Biometrika 33:239). O(n^2) pairs, evaluated in chunks.

A coefficient is undefined when ``x`` or ``y`` is constant; the public functions then raise,
the ``batched_*`` ones (used on bootstrap resamples) return NaN.
"""

from __future__ import annotations

import torch

from interplab.core.errors import InputError
from interplab.stats._shapes import Paired, PerBatch
from interplab.stats._validate import as_samples, chunk_size


def batched_pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson's r along the last dim of float64 ``[..., n]`` tensors; NaN where undefined."""
    xc = x - x.mean(-1, keepdim=True)
    yc = y - y.mean(-1, keepdim=True)
    sx, sy = (xc * xc).sum(-1), (yc * yc).sum(-1)
    den = (sx * sy).sqrt()
    r = (xc * yc).sum(-1) / den
    # Rounding can push |r| a hair above 1.
    return torch.where(den > 0, r.clamp(-1.0, 1.0), torch.nan)


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks along the last dim, tied values sharing their average rank."""
    s = x.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(s, x.contiguous(), right=False)
    up_to = torch.searchsorted(s, x.contiguous(), right=True)
    # Tied values occupy ranks below+1 .. up_to; their average is (below + 1 + up_to) / 2.
    return (below + up_to + 1).to(torch.float64) / 2


def batched_spearman(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Spearman's rho along the last dim; NaN where undefined."""
    return batched_pearson(average_ranks(x), average_ranks(y))


def batched_kendall_tau(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b along the last dim; NaN where undefined."""
    n = x.shape[-1]
    batch = x.shape[:-1]
    xf, yf = x.reshape(-1, n), y.reshape(-1, n)
    s = xf.new_zeros(xf.shape[0])
    px = xf.new_zeros(xf.shape[0])
    py = xf.new_zeros(xf.shape[0])
    step = chunk_size(xf.shape[0] * n)
    for i in range(0, n, step):
        # Rows i..i+step against every j: the full matrix counts each pair twice, which the
        # ratio cancels.
        sx = (xf[:, i : i + step, None] - xf[:, None, :]).sign()
        sy = (yf[:, i : i + step, None] - yf[:, None, :]).sign()
        s += (sx * sy).sum((1, 2))
        px += sx.abs().sum((1, 2))  # pairs not tied in x: n_0 - n_x (twice)
        py += sy.abs().sum((1, 2))
    den = (px * py).sqrt()
    tau = torch.where(den > 0, s / torch.where(den > 0, den, 1.0), torch.nan)
    return tau.clamp(-1.0, 1.0).reshape(batch)


def _observations(v, name: str) -> torch.Tensor:
    t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
    if t.dim() == 0:
        raise InputError(f"{name} is a scalar; pass paired observations as a tensor [n] or [..., n].")
    return as_samples(t.movedim(-1, 0), name).movedim(0, -1)


def checked_pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float64 ``[..., n]`` with equal shapes, n >= 2, neither constant."""
    x, y = _observations(x, "x"), _observations(y, "y")
    if x.shape != y.shape:
        raise InputError(
            f"x and y must have the same shape (paired observations along the last dim); got "
            f"{tuple(x.shape)} and {tuple(y.shape)}."
        )
    for name, v in (("x", x), ("y", y)):
        if bool((v.amax(-1) == v.amin(-1)).any()):
            raise InputError(
                f"{name} is constant (along the last dim), so its correlation with anything is "
                "undefined (zero variance). Check that the quantity actually varies across samples."
            )
    return x, y


def pearson(x: Paired, y: Paired) -> PerBatch:
    """Pearson's correlation of ``x`` and ``y`` (along the last dim)."""
    return batched_pearson(*checked_pair(x, y))


def spearman(x: Paired, y: Paired) -> PerBatch:
    """Spearman's rank correlation of ``x`` and ``y`` (average ranks for ties)."""
    return batched_spearman(*checked_pair(x, y))


def kendall_tau(x: Paired, y: Paired) -> PerBatch:
    """Kendall's tau-b of ``x`` and ``y`` (tie-corrected; equals tau-a without ties)."""
    return batched_kendall_tau(*checked_pair(x, y))
