"""Verified sweeps: AtP* over the whole grid, exact patching of the cells it ranks first and of a
random sample of the rest, and what the sample says about the effects the estimate missed.

``mode`` picks the path: ``exact`` (``activation_patching`` of every cell), ``attribution``
(``atp_star`` only) or ``verified``. A verified sweep runs AtP* (``atp_star``: AtP with the QK
fix, optionally GradDrop) over the grid, then patches exactly -- the batched
``activation_patching`` restricted to a cell list -- the ``top_k`` cells of largest AtP* score
and ``n_random`` cells drawn uniformly, without replacement and seeded, from the others. The
exact cells come with their bootstrap CIs, p- and BH q-values (over the verified cells). In the
spirit of Kramár et al. 2024 ("AtP*", arXiv:2403.00745), who verify AtP*'s top nodes by
activation patching and bound the remaining false negatives by sampling: the estimate spends
the budget, the sample checks it.

What the random sample S (m cells of the N cells U outside the top-k) reports, with magnitudes
on the effects' scale (a cell's magnitude is the mean over prompts of |its per-prompt change|,
i.e. |effect − null| per prompt averaged; AtP*'s score without GradDrop estimates exactly
this, GradDrop's is a proxy for it):

* ``rank_corr``: Spearman's rho between AtP* score and exact magnitude over S, with a pairs
  bootstrap CI (BCa) -- how well the estimate orders cells it did not put first.
* ``missed_max``: the largest exact magnitude in S -- the largest effect found among cells the
  estimate ranked below the top-k.
* ``missed_exceed``: distribution-free: the smallest K with C(N−K−1, m) / C(N, m) <= 1 −
  confidence. S misses all of U's K+1 largest cells with at most that probability, so with the
  stated confidence at most K cells of U are larger than ``missed_max`` (hypergeometric; exact
  for the uniform sample, no assumption on the effects).
* ``missed_bound``: a split-conformal upper bound (Vovk et al. 2005; Lei et al. 2018). With
  residuals r = exact − score over S and q the ceil((m+1)·confidence)-th smallest of them, an
  unverified cell j drawn at random has exact_j <= score_j + q with probability >= confidence
  (S and j are exchangeable: S is a uniform draw from U; any score works, GradDrop's too).
  ``missed_bound`` = max(missed_max, max_j score_j + q), the largest of those per-cell bounds:
  the coverage is per cell, not simultaneous over all cells. None when the sample is too small
  to give q, i.e. ceil((m+1)·confidence) > m (m < 19 at 95%).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from interplab.analyses.atp_star import AtPStarConfig, AtPStarResult, atp_star
from interplab.analyses.patching import PatchingResult, activation_patching
from interplab.core.config import param
from interplab.core.errors import ConfigError
from interplab.core.model import Model
from interplab.core.shapes import AnswerIds
from interplab.stats import CI, correlation_ci

MODES = ("exact", "attribution", "verified")


@dataclass(frozen=True)
class VerifiedConfig(AtPStarConfig):
    """A patching sweep run exactly, estimated by AtP*, or estimated and checked (verified)."""

    mode: str = param("verified", choices=MODES, help="exact (patch every cell), attribution "
                      "(AtP* only) or verified (AtP*, then exact patching of its top cells and a "
                      "random sample of the rest).")
    top_k: int = param(10, ge=0, help="verified: patch exactly the cells with the largest AtP* scores.")
    n_random: int = param(10, ge=0, help="verified: also patch this many cells drawn at random "
                          "(seeded) from the rest, to check the estimate there.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode == "verified" and self.top_k + self.n_random < 1:
            raise ConfigError("A verified sweep patches top_k + n_random cells; set either above 0.")


@dataclass
class VerifiedResult:
    """Exact effects of the verified cells, the AtP* estimate of every cell, and the check."""

    config: VerifiedConfig
    axes: dict[str, list]  # the sweep's grid
    effects: torch.Tensor  # [*cells] mean normalised effect: exact where verified, NaN elsewhere
    #                        (mode attribution: the estimate everywhere)
    verified: torch.Tensor  # [*cells] bool: patched exactly
    sampled: torch.Tensor  # [*cells] bool: drawn at random (a subset of verified)
    cells: list[list[int]]  # grid coordinates of the exact cells, in the order of exact's axis
    exact: PatchingResult | None = None  # verified: axis "cell"; exact: the whole grid
    estimate: AtPStarResult | None = None
    exact_magnitude: torch.Tensor | None = None  # [*cells] like effects: mean |effect − null|
    rank_corr: float | None = None  # Spearman, AtP* score vs exact magnitude, on the sample
    rank_corr_ci: CI | None = None
    missed_max: float | None = None
    missed_exceed: int | None = None
    missed_bound: float | None = None
    n_unverified: int = 0
    seconds: dict[str, float] | None = None


def _coords(axes: dict[str, list]) -> list[list[int]]:
    """Every cell's coordinates in the grid's row-major order."""
    values = list(axes.values())
    return [[v[i] for v, i in zip(values, idx)] for idx in
            torch.cartesian_prod(*[torch.arange(len(v)) for v in values]).reshape(-1, len(values)).tolist()]


def _magnitude(exact: PatchingResult, null: float) -> torch.Tensor:
    return (exact.effects - null).abs().mean(0).reshape(-1).double()


def verified_patching(model: Model, clean, corrupt, answers: AnswerIds, wrong: AnswerIds,
                      config: VerifiedConfig = VerifiedConfig()) -> VerifiedResult:
    """Run the sweep in ``config.mode``; see the module docstring."""
    null = 0.0 if config.direction == "denoising" else 1.0
    if config.mode == "exact":
        start = time.perf_counter()
        exact = activation_patching(model, clean, corrupt, answers, wrong, config)
        shape = exact.effects.shape[1:]
        everything = torch.ones(shape, dtype=torch.bool)
        return VerifiedResult(config, exact.axes, exact.effects.mean(0), everything,
                              torch.zeros_like(everything), _coords(exact.axes), exact=exact,
                              exact_magnitude=_magnitude(exact, null).reshape(shape),
                              seconds={"exact": time.perf_counter() - start})
    start = time.perf_counter()
    est = atp_star(model, clean, corrupt, answers, wrong, config)
    t_est = time.perf_counter() - start
    shape = est.score.shape
    if config.mode == "attribution":
        nothing = torch.zeros(shape, dtype=torch.bool)
        return VerifiedResult(config, est.axes, est.effects.mean(0), nothing, nothing.clone(), [],
                              estimate=est, n_unverified=nothing.numel(), seconds={"estimate": t_est})

    score = est.score.reshape(-1).double()
    order = torch.sort(score, descending=True, stable=True).indices  # ties: grid order
    top = order[: config.top_k]
    rest = order[config.top_k :]
    g = torch.Generator().manual_seed(config.seed)
    sample = rest[torch.randperm(len(rest), generator=g)[: config.n_random]]
    chosen = torch.cat([top, sample])
    coords = _coords(est.axes)
    cells = [coords[i] for i in chosen.tolist()]
    start = time.perf_counter()
    exact = activation_patching(model, clean, corrupt, answers, wrong, config, cells=cells)
    t_exact = time.perf_counter() - start

    n_cells = score.numel()
    effects = torch.full((n_cells,), float("nan"))
    effects[chosen] = exact.effects.mean(0)
    magnitude = torch.full((n_cells,), float("nan"), dtype=torch.float64)
    magnitude[chosen] = _magnitude(exact, null)
    verified = torch.zeros(n_cells, dtype=torch.bool)
    verified[chosen] = True
    sampled = torch.zeros(n_cells, dtype=torch.bool)
    sampled[sample] = True
    unverified = ~verified
    check = _check(score[sample], magnitude[sample], score[unverified], len(rest), config)
    return VerifiedResult(
        config, est.axes, effects.reshape(shape), verified.reshape(shape), sampled.reshape(shape),
        cells, exact=exact, estimate=est, exact_magnitude=magnitude.float().reshape(shape),
        n_unverified=int(unverified.sum()), seconds={"estimate": t_est, "exact": t_exact}, **check,
    )


def _check(s_score: torch.Tensor, s_exact: torch.Tensor, u_score: torch.Tensor, n_rest: int,
           config: VerifiedConfig) -> dict:
    """Rank correlation on the sample and the missed-effect estimates (module docstring)."""
    m, conf = len(s_score), config.confidence
    out: dict = {}
    if m == 0:
        return {"missed_exceed": n_rest}
    out["missed_max"] = float(s_exact.max())
    out["missed_exceed"] = exceed_bound(n_rest, m, conf)
    rank = math.ceil((m + 1) * conf - 1e-9)  # conformal rank, robust to 20 * 0.95 = 18.999...
    if rank <= m:
        q = float(torch.sort(s_exact - s_score).values[rank - 1])
        top_unverified = float(u_score.max()) if len(u_score) else float("-inf")
        out["missed_bound"] = max(out["missed_max"], top_unverified + q)
    constant = bool(s_score.max() == s_score.min()) or bool(s_exact.max() == s_exact.min())
    if m >= 3 and not constant:
        ci = correlation_ci(s_score, s_exact, "spearman", n_resamples=config.n_resamples,
                            confidence=conf, seed=config.seed)
        out["rank_corr"], out["rank_corr_ci"] = float(ci.estimate), ci
    return out


def exceed_bound(n: int, m: int, confidence: float) -> int:
    """Smallest K such that a uniform sample of m of n items misses all of the K+1 largest
    with probability C(n−K−1, m) / C(n, m) <= 1 − confidence (0 <= K <= n − m)."""

    def miss(k: int) -> float:  # prod_i (n−k−1−i) / (n−i): no huge binomials
        p = 1.0
        for i in range(m):
            p *= max(n - k - 1 - i, 0) / (n - i)
        return p

    lo, hi = 0, max(n - m, 0)
    while lo < hi:  # the miss probability falls as K grows
        mid = (lo + hi) // 2
        if miss(mid) <= 1.0 - confidence:
            hi = mid
        else:
            lo = mid + 1
    return lo


__all__ = ["MODES", "VerifiedConfig", "VerifiedResult", "exceed_bound", "verified_patching"]
