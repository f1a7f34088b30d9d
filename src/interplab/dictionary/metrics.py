"""Reconstruction and sparsity metrics of a sparse dictionary, as pure tensor functions.

Tokens go along dim 0 (``target``, ``recon``: ``[tokens, d]``; latents ``z``: ``[tokens,
d_sae]``); every reduction runs in float64. The definitions follow Gao et al. 2024 ("Scaling
and evaluating sparse autoencoders") and SAELens / SAEBench, and each is spelled out in its
docstring because the field's numbers are not comparable when these details differ:

* the squared error is summed over features and averaged over tokens (not averaged over both);
* the fraction of variance unexplained divides by the variance of the target about its MEAN
  over tokens, never about zero: residual-stream activations have a large mean, so
  "explained variance" against zero reads ~0.98 where against the mean it is ~0.78;
* a latent "fires" on a token when its activation is nonzero.

``ReconstructionStats`` accumulates the sums over batches, so its FVU over many batches equals
the FVU of the concatenated tokens (the per-feature mean and squared deviations merge by Chan
et al.'s 1979 pairwise update, stable where sum-of-squares minus square-of-sums is not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interplab.core.errors import InputError

EPS = 1e-12
DENSE_THRESHOLD = 0.1
"""A latent is dense when it fires on more than this fraction of tokens (log10 density > -1,
SAELens' and Anthropic's convention)."""


def _pair(recon: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if recon.shape != target.shape or recon.ndim != 2:
        raise InputError(
            f"recon and target must both be [tokens, d] with the same shape; got "
            f"{tuple(recon.shape)} and {tuple(target.shape)}."
        )
    if recon.shape[0] == 0:
        raise InputError("No tokens: the metrics need at least one token.")
    return recon.double(), target.double()


def l0(z: Float[Tensor, "tokens d_sae"]) -> float:
    """Mean over tokens of the number of nonzero latents: ``mean_t #{i : z[t, i] != 0}``."""
    return float((z != 0).sum(-1).double().mean())


def mse(recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"]) -> float:
    """Squared error SUMMED over features, averaged over tokens: ``mean_t ||r_t - x_t||²``.

    (The per-feature average is ``mse / d``; see ``per_feature_mse``.)
    """
    r, x = _pair(recon, target)
    return float((r - x).pow(2).sum(-1).mean())


def per_feature_mse(recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"]) -> Tensor:
    """``[d]``: mean over tokens of the squared error of each feature, ``mean_t (r_ti - x_ti)²``."""
    r, x = _pair(recon, target)
    return (r - x).pow(2).mean(0)


def fvu(recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"]) -> float:
    """Fraction of variance unexplained: ``Σ_t Σ_i (r_ti - x_ti)² / Σ_t Σ_i (x_ti - x̄_i)²``.

    ``x̄_i`` is feature i's mean over the tokens, so the denominator is the target's total
    variance about its mean — NOT its squared norm about zero (which flatters a dictionary by
    crediting it with the mean, often the largest part of a residual stream's norm).
    """
    r, x = _pair(recon, target)
    return float((r - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum().clamp_min(EPS))


def explained_variance(recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"]) -> float:
    """``1 - fvu(recon, target)``: the share of the target's variance about its mean explained."""
    return 1.0 - fvu(recon, target)


def cosine_similarity(recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"]) -> float:
    """Mean over tokens of ``r_t · x_t / max(||r_t|| ||x_t||, 1e-12)`` (0 for a zero vector)."""
    r, x = _pair(recon, target)
    return float(((r * x).sum(-1) / (r.norm(dim=-1) * x.norm(dim=-1)).clamp_min(EPS)).mean())


def relative_norm(recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"]) -> float:
    """Mean over tokens of ``||r_t|| / max(||x_t||, 1e-12)`` (SAELens' l2 ratio; < 1 is shrinkage)."""
    r, x = _pair(recon, target)
    return float((r.norm(dim=-1) / x.norm(dim=-1).clamp_min(EPS)).mean())


def feature_density(z: Float[Tensor, "tokens d_sae"]) -> Tensor:
    """``[d_sae]`` float64: the fraction of tokens each latent fires (is nonzero) on."""
    if z.ndim != 2 or z.shape[0] == 0:
        raise InputError(f"Latents must be [tokens, d_sae] with tokens > 0; got {tuple(z.shape)}.")
    return (z != 0).sum(0).double() / z.shape[0]


def dead_latents(density: Tensor) -> Tensor:
    """Bool ``[d_sae]``: latents that never fired over the evaluated tokens (density 0)."""
    return density == 0


def dense_latents(density: Tensor, threshold: float = DENSE_THRESHOLD) -> Tensor:
    """Bool ``[d_sae]``: latents firing on MORE than ``threshold`` of the tokens (default 0.1,
    i.e. log10 density > -1)."""
    return density > threshold


@dataclass(frozen=True, eq=False)
class DensityHistogram:
    """Histogram of log10 feature density; dead latents (log10 0 = -inf) counted apart."""

    counts: Tensor
    """``[bins]`` long: latents per bin. Bin i covers ``[edges[i], edges[i+1])``, the last bin
    also its upper edge; densities below ``edges[0]`` fall in bin 0."""
    edges: Tensor
    """``[bins + 1]`` float64 log10-density edges."""
    n_dead: int
    """Latents with density 0, which no bin holds."""


def log10_density_histogram(density: Tensor, bins: int = 40, low: float = -8.0, high: float = 0.0
                            ) -> DensityHistogram:
    """Histogram of ``log10(density)`` over ``bins`` equal bins on ``[low, high]``.

    A live latent's bin is ``clamp(floor((log10 d - low) / width), 0, bins - 1)``; dead
    latents go to ``n_dead`` instead of a bin.
    """
    if bins < 1 or not low < high:
        raise InputError(f"Need bins >= 1 and low < high; got bins={bins}, low={low}, high={high}.")
    density = density.double().cpu()
    live = density > 0
    width = (high - low) / bins
    idx = ((density[live].log10() - low) / width).floor().long().clamp(0, bins - 1)
    counts = torch.bincount(idx, minlength=bins)
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    return DensityHistogram(counts, edges, int((~live).sum()))


@dataclass(frozen=True)
class ReconstructionMetrics:
    """Every reconstruction and sparsity metric over the accumulated tokens (see the functions
    of the same names for the definitions)."""

    n_tokens: int
    l0: float
    mse: float
    fvu: float
    explained_variance: float
    cosine_similarity: float
    relative_norm: float
    n_dead: int
    n_dense: int
    dense_threshold: float


class ReconstructionStats:
    """Streaming sums for the metrics above; ``update`` per batch, read at any time.

    Holds, in float64: the token count, the summed squared error, per-feature mean and summed
    squared deviation of the target (merged by Chan et al. 1979, so batching does not change the
    result beyond rounding), the summed cosine and norm ratio, and per-latent firing counts and
    activation sums.
    """

    def __init__(self, d: int | None = None, d_sae: int | None = None) -> None:
        self.n = 0
        self.sse = 0.0
        self.sse_per_feature: Tensor | None = None
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None
        self.cos_sum = 0.0
        self.norm_ratio_sum = 0.0
        self.l0_sum = 0.0
        self.fires: Tensor | None = None if d_sae is None else torch.zeros(d_sae, dtype=torch.long)
        self.act_sum: Tensor | None = None if d_sae is None else torch.zeros(d_sae, dtype=torch.float64)
        self.n_latent_tokens = 0

    @torch.no_grad()
    def update(self, recon: Float[Tensor, "tokens d"], target: Float[Tensor, "tokens d"],
               z: Float[Tensor, "tokens d_sae"] | None = None) -> None:
        """Add one batch of tokens (rows of ``recon``, ``target`` and, if given, ``z``)."""
        r, x = _pair(recon, target)
        r, x = r.cpu(), x.cpu()
        n_b = x.shape[0]
        err2 = (r - x).pow(2)
        mean_b = x.mean(0)
        m2_b = (x - mean_b).pow(2).sum(0)
        if self.mean is None:
            self.mean, self.m2, self.sse_per_feature = mean_b, m2_b, err2.sum(0)
        else:
            if x.shape[1] != self.mean.shape[0]:
                raise InputError(f"Width changed between batches: {self.mean.shape[0]} then {x.shape[1]}.")
            n = self.n + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            self.m2 = self.m2 + m2_b + delta.pow(2) * (self.n * n_b / n)
            self.sse_per_feature = self.sse_per_feature + err2.sum(0)
        self.n += n_b
        self.sse += float(err2.sum())
        rn, xn = r.norm(dim=-1), x.norm(dim=-1)
        self.cos_sum += float(((r * x).sum(-1) / (rn * xn).clamp_min(EPS)).sum())
        self.norm_ratio_sum += float((rn / xn.clamp_min(EPS)).sum())
        if z is not None:
            self.add_latents(z)

    @torch.no_grad()
    def add_latents(self, z: Float[Tensor, "tokens d_sae"]) -> None:
        """Add one batch of latents (firing counts, activation sums, L0)."""
        fired = z != 0
        if self.fires is None:
            self.fires = torch.zeros(z.shape[1], dtype=torch.long)
            self.act_sum = torch.zeros(z.shape[1], dtype=torch.float64)
        self.fires += fired.sum(0).cpu()
        self.act_sum += z.double().sum(0).cpu()
        self.l0_sum += float(fired.sum())
        self.n_latent_tokens += z.shape[0]

    # -- reading ---------------------------------------------------------------------------------
    def _need(self) -> None:
        if self.n == 0:
            raise InputError("ReconstructionStats has no tokens yet; call update() first.")

    @property
    def mse(self) -> float:
        self._need()
        return self.sse / self.n

    @property
    def fvu(self) -> float:
        self._need()
        return self.sse / max(float(self.m2.sum()), EPS)

    @property
    def explained_variance(self) -> float:
        return 1.0 - self.fvu

    @property
    def cosine_similarity(self) -> float:
        self._need()
        return self.cos_sum / self.n

    @property
    def relative_norm(self) -> float:
        self._need()
        return self.norm_ratio_sum / self.n

    @property
    def l0(self) -> float:
        return self.l0_sum / self.n_latent_tokens if self.n_latent_tokens else math.nan

    @property
    def density(self) -> Tensor:
        """``[d_sae]`` float64 fraction of tokens each latent fired on."""
        if self.fires is None or self.n_latent_tokens == 0:
            raise InputError("No latents accumulated; pass z to update() or call add_latents().")
        return self.fires.double() / self.n_latent_tokens

    @property
    def mean_activation_when_firing(self) -> Tensor:
        """``[d_sae]`` float64: mean activation over the tokens a latent fired on (NaN if dead)."""
        return self.act_sum / self.fires.double()

    def result(self, dense_threshold: float = DENSE_THRESHOLD) -> ReconstructionMetrics:
        density = self.density if self.fires is not None and self.n_latent_tokens else None
        return ReconstructionMetrics(
            n_tokens=self.n,
            l0=self.l0,
            mse=self.mse,
            fvu=self.fvu,
            explained_variance=self.explained_variance,
            cosine_similarity=self.cosine_similarity,
            relative_norm=self.relative_norm,
            n_dead=-1 if density is None else int(dead_latents(density).sum()),
            n_dense=-1 if density is None else int(dense_latents(density, dense_threshold).sum()),
            dense_threshold=dense_threshold,
        )
