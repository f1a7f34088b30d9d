"""The toy model of superposition (Elhage et al. 2022, "Toy Models of Superposition").

``n`` sparse features ``x`` (each active with probability ``p``, then uniform on [0, 1)) are
squeezed through ``d < n`` hidden dimensions and read back with the tied weights:

    h = W x,    x_hat = ReLU(W^T h + b),    loss = E sum_i I_i (x_i - x_hat_i)^2

with ``W [d, n]`` and feature importances ``I_i = importance_decay ** i``. The paper's headline
result: with dense data (``p = 1``) the model keeps about the ``d`` most important features, in
orthogonal directions, and drops the rest; as the features get sparser it represents *more
features than dimensions*, in superposition, paying interference the ReLU and bias filter out.
A feature counts as represented when its column norm ``||W_i||`` is above 0.5 (the paper's
plots show norms near 0 or near 1).

``hidden_activations`` then gives ``h`` with ground truth: the represented features' directions
are the normalised columns of ``W``, which is what a dictionary trained on ``h`` should find.
Training is plain Adam on fresh batches, deterministic in the seed; n = 20, d = 5 takes a few
CPU seconds. (The paper trains many instances and keeps the best; one seed can land in a worse
local minimum, so tests compare regimes, not exact counts.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interplab.core.config import param, to_dict
from interplab.core.errors import ConfigError, InputError

log = logging.getLogger(__name__)

REPRESENTED_NORM = 0.5


@dataclass(frozen=True)
class ToyConfig:
    """Size, sparsity and training of one toy model of superposition."""

    n_features: int = param(20, "Number of input features n.")
    d_hidden: int = param(5, "Hidden width d (< n_features for superposition to matter).")
    feature_probability: float = param(0.05, "Probability a feature is active (1 - sparsity S); 1 is dense.")
    importance_decay: float = param(0.9, "Feature i has importance decay**i (1 = all equally important).")
    steps: int = param(3000, "Adam steps.")
    batch_size: int = param(1024, "Fresh samples per step.")
    lr: float = param(1e-2, "Adam learning rate (cosine-decayed to 0 over the steps).")
    seed: int = param(0, "Seeds the initialisation and the data.")

    def __post_init__(self) -> None:
        if self.n_features <= 0 or self.d_hidden <= 0:
            raise ConfigError(f"n_features and d_hidden must be positive (got {self.n_features}, {self.d_hidden}).")
        if not 0.0 < self.feature_probability <= 1.0:
            raise ConfigError(f"feature_probability={self.feature_probability} must lie in (0, 1] (1 - sparsity).")
        if not 0.0 < self.importance_decay <= 1.0:
            raise ConfigError(f"importance_decay={self.importance_decay} must lie in (0, 1].")
        if self.steps <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ConfigError("steps, batch_size and lr must be positive.")

    def to_json(self) -> dict:
        return to_dict(self)


@dataclass(frozen=True, eq=False)
class ToyModel:
    """A trained toy model: ``h = W x``, ``x_hat = ReLU(W^T h + b)``."""

    config: ToyConfig
    W: Float[Tensor, "d_hidden n_features"]
    b: Float[Tensor, " n_features"]
    importance: Float[Tensor, " n_features"]
    feature_probability: float
    final_loss: float  # importance-weighted squared error on a fresh batch after training

    @property
    def norms(self) -> Float[Tensor, " n_features"]:
        """``||W_i||`` per feature (about 1: represented; about 0: dropped)."""
        return self.W.norm(dim=0)

    @property
    def represented(self) -> Tensor:
        """Bool mask of the features with ``||W_i|| > 0.5``."""
        return self.norms > REPRESENTED_NORM

    @property
    def n_represented(self) -> int:
        return int(self.represented.sum())

    @property
    def directions(self) -> Float[Tensor, "n_features d_hidden"]:
        """Every feature's direction in the hidden space: the columns of ``W``, normalised."""
        return (self.W / self.norms.clamp_min(1e-12)).T.contiguous()

    def forward(self, x: Float[Tensor, "batch n_features"]) -> Float[Tensor, "batch n_features"]:
        return torch.relu((x @ self.W.T) @ self.W + self.b)


class ToyHidden(NamedTuple):
    """Hidden activations of a toy model with the features that made them."""

    hidden: Float[Tensor, "n d_hidden"]
    coefficients: Float[Tensor, "n n_features"]


def sample_features(n: int, n_features: int, p: float, generator: torch.Generator) -> Tensor:
    """``[n, n_features]``: each entry uniform on [0, 1) with probability ``p``, else 0."""
    values = torch.rand(n, n_features, generator=generator)
    return values * (torch.rand(n, n_features, generator=generator) < p)


def train_toy_model(cfg: ToyConfig) -> ToyModel:
    """Train ``W`` and ``b`` with Adam on fresh sparse batches (deterministic in ``cfg.seed``)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n, d = cfg.n_features, cfg.d_hidden
    importance = cfg.importance_decay ** torch.arange(n, dtype=torch.float32)
    # Xavier-normal initialisation of W, zero bias, as in the paper's notebook.
    W = torch.nn.Parameter(torch.randn(d, n, generator=gen) * (2.0 / (n + d)) ** 0.5)
    b = torch.nn.Parameter(torch.zeros(n))
    opt = torch.optim.Adam([W, b], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)

    def loss_of(x: Tensor) -> Tensor:
        x_hat = torch.relu((x @ W.T) @ W + b)
        return ((x - x_hat) ** 2 * importance).sum(-1).mean()

    for _ in range(cfg.steps):
        loss = loss_of(sample_features(cfg.batch_size, n, cfg.feature_probability, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        final = float(loss_of(sample_features(cfg.batch_size, n, cfg.feature_probability, gen)))
    model = ToyModel(cfg, W.detach().clone(), b.detach().clone(), importance, cfg.feature_probability, final)
    log.info("toy model n=%d d=%d p=%.3g: %d features represented, loss %.4g", n, d,
             cfg.feature_probability, model.n_represented, final)
    return model


def hidden_activations(toy: ToyModel, n_tokens: int, seed: int = 1) -> ToyHidden:
    """``h = W x`` for ``n_tokens`` fresh feature vectors drawn like the training data.

    Ground truth for a dictionary trained on ``h``: ``toy.directions[toy.represented]``.
    """
    if n_tokens <= 0:
        raise InputError(f"n_tokens must be positive, got {n_tokens}.")
    gen = torch.Generator().manual_seed(seed)
    x = sample_features(n_tokens, toy.config.n_features, toy.feature_probability, gen)
    return ToyHidden(x @ toy.W.T, x)
