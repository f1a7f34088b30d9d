"""TopK sparse autoencoder with the AuxK dead-latent loss (Gao et al. 2024, "Scaling and
evaluating sparse autoencoders").

Each token keeps its ``k`` largest pre-activations (after a ReLU), so L0 is fixed at ``k`` and
no L1 penalty shrinks the kept values. AuxK: the ``aux_k`` largest pre-activations among
latents dead for ``dead_after_tokens`` tokens reconstruct the main model's residual error;
its squared error, divided by the error's variance, times ``aux_coeff`` (1/32 in the paper),
pulls dead latents back towards directions the live ones miss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interplab.core.errors import ConfigError
from interplab.dictionary.base import Dictionary, DictionaryConfig, register_dictionary


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Keep each row's k largest entries (then ReLU); zeros elsewhere."""
    values, idx = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, idx, values.relu())


class TopKFamily(Dictionary):
    """Shared by TopK, BatchTopK and Matryoshka: k checked against d_sae, AuxK on dead latents."""

    def check_config(self, cfg: DictionaryConfig) -> None:
        if cfg.k > cfg.d_sae:
            raise ConfigError(f"k={cfg.k} exceeds d_sae={cfg.d_sae}: a token cannot keep more latents than exist.")

    @property
    def aux_k(self) -> int:
        return self.cfg.aux_k or max(1, self.cfg.d_in // 2)

    def aux_loss(self, pre: Tensor, z: Tensor, err: Tensor) -> dict[str, Tensor]:
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if n_dead == 0 or not self.training:
            return {}
        k = min(self.aux_k, n_dead)
        dead_pre = pre.masked_fill(~dead, float("-inf"))
        z_aux = topk_relu(dead_pre, k).nan_to_num(0.0)
        e_hat = z_aux @ self.W_dec
        residual = -err.detach()  # target - recon
        var = (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        loss = (e_hat - residual).pow(2).sum(-1).mean() / var
        # Fewer dead latents than aux_k: scale down as sparsify does, so a few dead ones do not dominate.
        return {"auxk": self.cfg.aux_coeff * min(n_dead / self.aux_k, 1.0) * loss}


@register_dictionary("topk")
class TopK(TopKFamily):
    """TopK SAE: z = TopK_k(ReLU(W_enc (x - b_dec) + b_enc))."""

    def activation(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.cfg.k)

    # The sparse training step (sparse_ops): off by default; the trainer turns it on
    # (TrainConfig.sparse_step) and may set a lower-precision matmul dtype for the encoder.
    sparse_step: bool = False
    compute_dtype: torch.dtype | None = None

    def training_step(self, x: Tensor, target: Tensor | None = None):
        if self.sparse_step:
            from interplab.dictionary.sparse_ops import topk_train_step

            return topk_train_step(self, x, target, self.compute_dtype)
        return super().training_step(x, target)
