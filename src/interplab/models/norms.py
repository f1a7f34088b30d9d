"""The affine conventions of the norm modules interplab's families use, in one place.

Every supported norm computes ``norm(x) = P(x) / s(x) * gain + bias`` where ``P`` centres x
(LayerNorm) or not (RMSNorm) and ``s`` is ``sqrt(var(x) + eps)`` or ``sqrt(mean(x²) + eps)``.
``gain`` is the weight for ``nn.LayerNorm`` and Llama / Qwen RMSNorm, and ``1 + weight`` for
Gemma's RMSNorm (transformers' ``Gemma3RMSNorm``). Analyses that linearise a norm (direct logit
attribution, a dictionary latent's logit effects) read the convention from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NormConvention:
    centre: bool  # subtract the mean first (LayerNorm)
    gain: torch.Tensor  # [d_model] float64
    bias: torch.Tensor | None  # [d_model] float64
    eps: float

    def statistic(self, x: torch.Tensor) -> torch.Tensor:
        """``s(x)²``: the biased variance (centred) or the mean square, plus eps; keepdim."""
        if self.centre:
            return x.var(-1, unbiased=False, keepdim=True) + self.eps
        return x.pow(2).mean(-1, keepdim=True) + self.eps


def norm_convention(norm: nn.Module, d_model: int) -> NormConvention | None:
    """The convention of ``norm``, or None for a norm module interplab does not know."""
    weight = getattr(norm, "weight", None)
    gain = torch.ones(d_model, dtype=torch.float64) if weight is None else weight.detach().double()
    if isinstance(norm, nn.LayerNorm):
        bias = None if norm.bias is None else norm.bias.detach().double()
        return NormConvention(True, gain, bias, norm.eps)
    if hasattr(norm, "variance_epsilon"):  # Llama / Qwen RMSNorm: weight * x / rms(x)
        return NormConvention(False, gain, None, norm.variance_epsilon)
    if type(norm).__name__.startswith("Gemma") and hasattr(norm, "eps"):  # (1 + weight)
        return NormConvention(False, 1.0 + gain, None, norm.eps)
    return None
