"""Model dimensions under the one vocabulary of dimension names used everywhere.

batch, pos, d_model, n_heads, n_kv_heads, d_head, d_mlp, d_vocab, layer, d_sae.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDims:
    """Sizes of one model, read from its HF config by its adapter."""

    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
