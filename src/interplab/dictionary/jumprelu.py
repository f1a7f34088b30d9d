"""JumpReLU sparse autoencoder (Rajamanoharan et al. 2024, "Jumping Ahead: Improving
Reconstruction Fidelity with JumpReLU Sparse Autoencoders").

z = pre * H(pre - θ) with a learned per-latent threshold θ = exp(log_threshold) > 0, and an L0
penalty ``l0_coeff * sum_i H(pre_i - θ_i)`` averaged over tokens. H has no useful gradient,
so both the output's and the penalty's derivatives with respect to θ use straight-through
estimators with the rectangle kernel K(u) = 1[|u| < 1/2] of bandwidth ε (paper eqs. 11-12):

    ∂/∂θ JumpReLU_θ(z) := -(θ/ε) K((z - θ)/ε)
    ∂/∂θ H(z - θ)      := -(1/ε) K((z - θ)/ε)

The output's gradient with respect to z is the ordinary H(z - θ); the step's is zero (the
paper passes no gradient through H to the encoder). Both are ``torch.autograd.Function``s.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from interplab.core.errors import ConfigError
from interplab.dictionary.base import Dictionary, DictionaryConfig, register_dictionary


def rectangle(u: Tensor) -> Tensor:
    """K(u) = 1 where -1/2 < u < 1/2, else 0."""
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """pre * H(pre - θ); θ gets the rectangle-kernel pseudo-derivative -(θ/ε) K((pre-θ)/ε)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = (pre > threshold).to(grad.dtype) * grad
        grad_thr = (-(threshold / eps) * rectangle((pre - threshold) / eps) * grad).sum(0)
        return grad_pre, grad_thr, None


class StepFunction(torch.autograd.Function):
    """H(pre - θ); θ gets -(1/ε) K((pre-θ)/ε), pre gets nothing."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_thr = (-(1.0 / eps) * rectangle((pre - threshold) / eps) * grad).sum(0)
        return torch.zeros_like(pre), grad_thr, None


@register_dictionary("jumprelu")
class JumpReLU(Dictionary):
    """JumpReLU SAE with a per-latent ``log_threshold`` parameter (in normalised units)."""

    def check_config(self, cfg: DictionaryConfig) -> None:
        if cfg.jumprelu_threshold <= 0 or cfg.jumprelu_bandwidth <= 0:
            raise ConfigError(
                f"jumprelu_threshold and jumprelu_bandwidth must be positive (got "
                f"{cfg.jumprelu_threshold}, {cfg.jumprelu_bandwidth})."
            )

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__(cfg)
        self.log_threshold = nn.Parameter(torch.full((cfg.d_sae,), math.log(cfg.jumprelu_threshold)))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: Tensor) -> Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, pre: Tensor, z: Tensor) -> dict[str, Tensor]:
        active = StepFunction.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)
        return {"l0_loss": self.cfg.l0_coeff * active.sum(-1).mean()}

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """As the base, and scale θ with the pre-activations so the same latents fire."""
        norms = self.W_dec.norm(dim=-1).clamp_min(1e-8)
        super().normalize_decoder()
        self.log_threshold += norms.log()
