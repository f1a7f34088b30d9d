"""ReLU sparse autoencoder with a decoder-norm-weighted L1 penalty.

z = ReLU(W_enc (x - b_dec) + b_enc). The sparsity loss is
``l1_coeff * sum_i |z_i| * ||W_dec[i]||``, averaged over tokens (Anthropic, "Towards
Monosemanticity", 2023, and its April 2024 training update). Weighting each latent by its
decoder row's norm makes the penalty invariant to trading scale between encoder and decoder,
so this variant does **not** constrain decoder rows to unit norm: ``unit_norm_decoder`` is
False and a trainer should leave ``normalize_decoder``/``remove_parallel_grad`` alone.
"""

from __future__ import annotations

from torch import Tensor

from interplab.dictionary.base import Dictionary, register_dictionary


@register_dictionary("relu")
class ReLU(Dictionary):
    """ReLU SAE (SAELens calls it "standard")."""

    unit_norm_decoder = False

    def activation(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def sparsity_loss(self, pre: Tensor, z: Tensor) -> dict[str, Tensor]:
        weighted = z.abs() * self.W_dec.norm(dim=-1)
        return {"l1": self.cfg.l1_coeff * weighted.sum(-1).mean()}
