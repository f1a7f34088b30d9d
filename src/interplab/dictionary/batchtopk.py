"""BatchTopK sparse autoencoder (Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders").

Training keeps the ``k * batch`` largest ReLU pre-activations of the whole batch, so L0 is
``k`` on average but varies per token. Inference cannot depend on the batch, so it applies a
single global threshold θ (a JumpReLU at θ): θ tracks the smallest positive activation kept per
training batch, as an exponential moving average with rate ``cfg.threshold_lr`` (the first
batch sets it directly). θ and its update count are buffers, so ``save``/``load`` resume them
exactly. AuxK on dead latents as in TopK (``TopKFamily``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.dictionary.base import DictionaryConfig, register_dictionary
from interplab.dictionary.topk import TopKFamily


def batch_topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep the ``k * batch`` largest ReLU'd entries of the whole batch; zeros elsewhere."""
    flat = pre.relu().flatten()
    n = min(k * pre.shape[0], flat.numel())
    values, idx = flat.topk(n, sorted=False)
    return torch.zeros_like(flat).scatter_(0, idx, values).view_as(pre)


@register_dictionary("batchtopk")
class BatchTopK(TopKFamily):
    """BatchTopK SAE: batch-level top-k in training, z = pre * H(pre - θ) at inference."""

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def activation(self, pre: Tensor) -> Tensor:
        # relu() as well, so a threshold still at 0 (never trained) gives a plain ReLU.
        return pre.relu() * (pre > self.threshold)

    def train_latents(self, pre: Tensor) -> Tensor:
        z = batch_topk_relu(pre, self.cfg.k)
        if self.training:
            self.update_threshold(z)
        return z

    @torch.no_grad()
    def update_threshold(self, z: Tensor) -> None:
        """θ ← (1 - lr) θ + lr · min(positive kept activations) (first batch: θ ← min)."""
        kept = z[z > 0]
        if kept.numel() == 0:
            return
        low = kept.min().to(self.threshold.dtype)
        lr = 1.0 if int(self.threshold_updates) == 0 else self.cfg.threshold_lr
        self.threshold.mul_(1 - lr).add_(lr * low)
        self.threshold_updates += 1
