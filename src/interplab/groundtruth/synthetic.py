"""Synthetic activations with known features: ground truth for dictionaries and probes.

**Superposed sparse features.** The *superposition hypothesis* (Elhage et al. 2022, "Toy
Models of Superposition"; Sharkey, Braun & Millidge 2022, "Taking features out of superposition
with sparse autoencoders", the AI Alignment Forum interim report whose synthetic set-up this
follows) says a layer of width ``d`` represents ``n > d`` sparse features as nearly orthogonal
directions. We make such data on purpose: ``x = sum_i c_i f_i + noise`` with ``n_features``
unit directions ``f_i`` in ``R^d`` and sparse non-negative coefficients ``c_i``. A dictionary
method (an SAE) is then scored on whether its decoder rows find the ``f_i``
(``scoring.mean_max_cosine``) and its latents track the ``c_i``
(``scoring.hungarian_correlation``).

* Sparsity: feature ``i`` is active with probability ``feature_probability``.
* Correlation: independent; ``correlated`` groups of ``group_size`` features whose activity
  indicators have Pearson correlation exactly ``correlation`` within a group (with probability
  ``correlation`` a token's whole group copies one shared Bernoulli draw, else every feature
  draws its own; the marginal stays ``p``); or ``anticorrelated`` pairs ``(2j, 2j+1)`` that
  are never active together (a pair fires with probability ``2p`` and then one member at
  random, so each keeps marginal ``p``; indicator correlation ``-p / (1 - p)``).
* Magnitude of an active feature: ``uniform`` on (0, 1] (as in Elhage et al.) or
  ``lognormal`` ``exp(sigma * N(0, 1))``.
* Directions: ``random`` unit vectors (Gaussian, normalised: the honest superposed case) or
  ``orthogonal`` rows (only when ``n_features <= d``; no superposition, an easy control).

**Planted linear concepts** (``planted_concept``): a binary label shifts activations along one
unit direction while larger-variance nuisance directions (orthogonal to it) and group offsets
(items of one "template" share an offset) get in the way; the Bayes-optimal linear probe is
along the planted direction, so ``scoring.probe_recovery`` has an exact answer.

Everything is deterministic in the seeds (CPU generators).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interplab.core.config import param, to_dict
from interplab.core.errors import ConfigError, InputError, choices

CORRELATIONS = ("independent", "correlated", "anticorrelated")
MAGNITUDES = ("uniform", "lognormal")
DIRECTIONS = ("random", "orthogonal")


@dataclass(frozen=True)
class SyntheticFeatures:
    """Superposed sparse features: how many, in how many dimensions, how sparse and how related."""

    n_features: int = param(64, "Number of true features.")
    d: int = param(32, "Width of the activations; d < n_features puts the features in superposition.")
    feature_probability: float = param(0.04, "Probability that a feature is active on a token "
                                       "(1 - sparsity); expected active features per token = n_features * p.")
    correlation: str = param("independent", f"Structure of the activity indicators: {choices(CORRELATIONS)}.")
    group_size: int = param(4, "Features per group when correlation='correlated' (the last group may be smaller).")
    group_correlation: float = param(0.5, "Pearson correlation of two indicators in one group (correlated), in [0, 1].")
    magnitude: str = param("uniform", f"Distribution of an active feature's coefficient: {choices(MAGNITUDES)} "
                           "(uniform on (0, 1]; lognormal exp(sigma N(0,1))).")
    lognormal_sigma: float = param(0.5, "sigma of the lognormal magnitudes.")
    directions: str = param("random", f"Feature directions: {choices(DIRECTIONS)} (orthogonal needs n_features <= d).")
    noise_std: float = param(0.0, "Standard deviation of isotropic Gaussian noise added to every activation.")
    seed: int = param(0, "Seeds the directions; sampling draws from seed + 1 unless given a generator.")

    def __post_init__(self) -> None:
        if self.n_features <= 0 or self.d <= 0:
            raise ConfigError(f"n_features and d must be positive (got n_features={self.n_features}, d={self.d}).")
        if not 0.0 < self.feature_probability <= 1.0:
            raise ConfigError(f"feature_probability={self.feature_probability} must lie in (0, 1] "
                              "(it is 1 - sparsity; e.g. 0.04 for ~2.6 active of 64 features).")
        for name, value, valid in (("correlation", self.correlation, CORRELATIONS),
                                   ("magnitude", self.magnitude, MAGNITUDES),
                                   ("directions", self.directions, DIRECTIONS)):
            if value not in valid:
                raise ConfigError(f"{name}={value!r} is not one of {choices(valid)}.")
        if self.correlation == "anticorrelated" and self.feature_probability > 0.5:
            raise ConfigError(f"anticorrelated pairs fire with probability 2p, so feature_probability "
                              f"must be <= 0.5 (got {self.feature_probability}).")
        if self.group_size < 1 or not 0.0 <= self.group_correlation <= 1.0:
            raise ConfigError(f"Need group_size >= 1 and group_correlation in [0, 1] (got "
                              f"{self.group_size}, {self.group_correlation}); negative correlation: "
                              "use correlation='anticorrelated'.")
        if self.directions == "orthogonal" and self.n_features > self.d:
            raise ConfigError(f"{self.n_features} orthogonal directions do not fit in d={self.d}. Use "
                              "directions='random' (superposition) or n_features <= d.")
        if self.lognormal_sigma <= 0 or self.noise_std < 0:
            raise ConfigError("lognormal_sigma must be > 0 and noise_std >= 0.")

    @property
    def expected_active(self) -> float:
        """Expected number of active features per token (a natural TopK k)."""
        return self.n_features * self.feature_probability

    def to_json(self) -> dict:
        return to_dict(self)


class FeatureSample(NamedTuple):
    """Tokens drawn from a ``FeatureSet``."""

    activations: Float[Tensor, "n d"]
    coefficients: Float[Tensor, "n n_features"]  # >= 0; zero where a feature is inactive


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def feature_directions(n: int, d: int, kind: str, generator: torch.Generator) -> Float[Tensor, "n d"]:
    """``n`` unit rows in ``R^d``: Gaussian then normalised (``random``), or orthonormal rows
    from the QR decomposition of a Gaussian matrix (``orthogonal``, ``n <= d``)."""
    g = torch.randn(d, n, generator=generator, dtype=torch.float64)
    if kind == "orthogonal":
        q, r = torch.linalg.qr(g)  # q [d, n] with orthonormal columns
        q = q * torch.sign(torch.diagonal(r))  # the sign convention that makes q Haar-distributed
        return q.T.float().contiguous()
    return (g.T / g.T.norm(dim=-1, keepdim=True)).float().contiguous()


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """The true features of a ``SyntheticFeatures`` config and a sampler of tokens from them."""

    config: SyntheticFeatures
    directions: Float[Tensor, "n_features d"]  # unit rows: the ground truth a dictionary should find

    def indicators(self, n_tokens: int, generator: torch.Generator) -> Tensor:
        """Which features are active on each token: bool ``[n_tokens, n_features]``."""
        cfg, n, p = self.config, self.config.n_features, self.config.feature_probability
        if cfg.correlation == "independent":
            return torch.rand(n_tokens, n, generator=generator) < p
        if cfg.correlation == "correlated":
            n_groups = math.ceil(n / cfg.group_size)
            group = torch.arange(n) // cfg.group_size
            own = torch.rand(n_tokens, n, generator=generator) < p
            shared = torch.rand(n_tokens, n_groups, generator=generator) < p
            copy = torch.rand(n_tokens, n_groups, generator=generator) < cfg.group_correlation
            return torch.where(copy[:, group], shared[:, group], own)
        # anticorrelated pairs: a pair fires with probability 2p, then exactly one member.
        pairs = n // 2
        fires = torch.rand(n_tokens, pairs, generator=generator) < 2 * p
        second = torch.rand(n_tokens, pairs, generator=generator) < 0.5
        out = torch.zeros(n_tokens, n, dtype=torch.bool)
        out[:, 0 : 2 * pairs : 2] = fires & ~second
        out[:, 1 : 2 * pairs : 2] = fires & second
        if n % 2:
            out[:, -1] = torch.rand(n_tokens, generator=generator) < p
        return out

    def sample(self, n_tokens: int, generator: torch.Generator | None = None) -> FeatureSample:
        """``n_tokens`` tokens: ``(activations [n, d], coefficients [n, n_features])``.

        Without a generator the draw comes from ``seed + 1``, so the same config always gives
        the same tokens; pass a generator for fresh (e.g. held-out) tokens.
        """
        if n_tokens <= 0:
            raise InputError(f"n_tokens must be positive, got {n_tokens}.")
        cfg = self.config
        gen = generator if generator is not None else _generator(cfg.seed + 1)
        active = self.indicators(n_tokens, gen)
        if cfg.magnitude == "uniform":
            mag = 1.0 - torch.rand(n_tokens, cfg.n_features, generator=gen)  # (0, 1]
        else:
            mag = torch.exp(cfg.lognormal_sigma * torch.randn(n_tokens, cfg.n_features, generator=gen))
        coeffs = mag * active
        acts = coeffs @ self.directions
        if cfg.noise_std > 0:
            acts = acts + cfg.noise_std * torch.randn(acts.shape, generator=gen)
        return FeatureSample(acts, coeffs)


def make_features(cfg: SyntheticFeatures) -> FeatureSet:
    """The ground-truth directions of ``cfg`` (drawn from ``cfg.seed``)."""
    dirs = feature_directions(cfg.n_features, cfg.d, cfg.directions, _generator(cfg.seed))
    return FeatureSet(cfg, dirs)


class PlantedConcept(NamedTuple):
    """Probe data with a known answer: the concept is linear along ``direction``."""

    acts: Float[Tensor, "n d"]
    labels: Tensor  # long, 0/1, balanced
    groups: Tensor  # long: items of one group share a nuisance offset
    direction: Float[Tensor, " d"]  # unit vector; label 1 lies on its positive side


def planted_concept(n: int, d: int, signal: float = 1.0, n_nuisance: int = 4, seed: int = 0,
                    nuisance_scale: float = 3.0, group_size: int = 4) -> PlantedConcept:
    """``n`` activations in ``R^d`` where a binary label moves the mean along one direction.

    ``acts = (2 y - 1) * signal / 2 * direction + N(0, I) + nuisance + group offset``: the class
    means are ``signal`` apart along ``direction`` (unit); ``n_nuisance`` further directions,
    orthogonal to it, carry ``nuisance_scale``-times-larger noise (the high-variance distractors
    that make the top principal components useless); items of a group (``group_size`` consecutive
    rows) share one offset in the nuisance subspace. Since all the noise outside ``direction`` is
    orthogonal to it, the covariance maps ``direction`` to a multiple of itself and the LDA /
    Bayes direction ``Sigma^-1 (mu_1 - mu_0)`` is ``direction`` exactly.
    """
    if n < 8 or d < 1 or n_nuisance < 0 or n_nuisance >= d:
        raise ConfigError(f"planted_concept needs n >= 8, d >= 1 and 0 <= n_nuisance < d (got n={n}, "
                          f"d={d}, n_nuisance={n_nuisance}): the nuisance directions must leave room for "
                          "the concept's own.")
    if signal <= 0 or nuisance_scale < 0 or group_size < 1:
        raise ConfigError("Need signal > 0, nuisance_scale >= 0 and group_size >= 1.")
    gen = _generator(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, n_nuisance + 1, generator=gen, dtype=torch.float64))
    basis = basis.T.float()  # orthonormal rows: [0] the concept, [1:] the nuisance directions
    direction, nuisance = basis[0], basis[1:]
    labels = torch.randperm(n, generator=gen) % 2  # balanced, in random order
    groups = torch.arange(n) // group_size
    n_groups = int(groups[-1]) + 1
    acts = torch.randn(n, d, generator=gen)
    acts += ((labels.float() - 0.5) * signal)[:, None] * direction
    if n_nuisance:
        coef = nuisance_scale * torch.randn(n, n_nuisance, generator=gen)
        offset = nuisance_scale * torch.randn(n_groups, n_nuisance, generator=gen)
        acts += (coef + offset[groups]) @ nuisance
    return PlantedConcept(acts, labels.long(), groups, direction)
