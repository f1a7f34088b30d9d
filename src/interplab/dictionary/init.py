"""Data-dependent initialisation of a dictionary before training.

* ``in_scale`` / ``out_scale``: a constant factor so the mean squared norm of the (scaled)
  inputs and targets equals their width, i.e. E||s x||^2 = d (SAELens'
  ``normalize_activations="expected_average_only_in"``; Anthropic, "Circuits Updates, April
  2024"). Hyper-parameters then transfer across layers and models.
* ``b_dec``: the geometric median of the (scaled) targets (Bricken et al. 2023, "Towards
  Monosemanticity"), computed with Weiszfeld's algorithm (E. Weiszfeld, "Sur le point pour
  lequel la somme des distances de n points donnés est minimum", Tôhoku Math. J. 43, 1937),
  guarding the division when the estimate lands on a data point as Vardi & Zhang (2000) do by
  clamping the distances; or the mean; or zeros.
"""

from __future__ import annotations

import logging

import torch
from jaxtyping import Float
from torch import Tensor

from interplab.dictionary.base import Dictionary

log = logging.getLogger(__name__)


def geometric_median(points: Float[Tensor, "n d"], tol: float = 1e-6, max_iter: int = 200,
                     eps: float = 1e-8) -> Float[Tensor, " d"]:
    """The point minimising the sum of Euclidean distances to ``points`` (Weiszfeld iterations).

    Runs in float64 from the mean; stops when a step moves less than ``tol`` (relative to the
    estimate's norm, at least 1) or after ``max_iter`` steps. Returns ``points.dtype``.
    """
    x = points.detach().to(torch.float64)
    y = x.mean(0)
    for _ in range(max_iter):
        w = 1.0 / (x - y).norm(dim=-1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        moved = float((y_new - y).norm())
        y = y_new
        if moved <= tol * max(1.0, float(y.norm())):
            break
    return y.to(points.dtype)


def norm_scale(x: Float[Tensor, "n d"]) -> float:
    """The factor s with mean ||s x||^2 = d."""
    ms = x.detach().to(torch.float64).pow(2).sum(-1).mean()
    return float((x.shape[-1] / ms.clamp_min(1e-30)).sqrt())


@torch.no_grad()
def initialize(d: Dictionary, x: Tensor, target: Tensor, b_dec_init: str, normalize: bool) -> None:
    """Set ``d``'s scales and decoder bias from a sample of inputs and targets (raw units)."""
    if normalize and d.cfg.normalize:
        d.in_scale.fill_(norm_scale(x))
        d.out_scale.fill_(norm_scale(target))
    t_n = target.to(torch.float64) * d.out_scale.double()
    if b_dec_init == "geometric_median":
        d.b_dec.copy_(geometric_median(t_n))
    elif b_dec_init == "mean":
        d.b_dec.copy_(t_n.mean(0))
    else:
        d.b_dec.zero_()
    log.debug("initialised %s: in_scale=%.4g out_scale=%.4g |b_dec|=%.4g", d.arch,
              float(d.in_scale), float(d.out_scale), float(d.b_dec.norm()))
