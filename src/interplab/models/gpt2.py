"""GPT-2: learned positions, LayerNorm, fused c_attn (Conv1D), GELU MLP.

``embed`` is the token embedding (wte) only; resid_pre of layer 0 adds the position embedding.
"""

from __future__ import annotations

from interplab.core.dims import ModelDims
from interplab.models.adapter import Adapter
from interplab.models.hookpoint import HookPoint, fused_slice
from interplab.models.registry import register_adapter


@register_adapter
class GPT2Adapter(Adapter):
    name = "gpt2"
    model_types = ("gpt2",)
    family_keys = frozenset(
        {
            "activation_function", "add_cross_attention", "attn_pdrop", "embd_pdrop",
            "layer_norm_epsilon", "n_embd", "n_head", "n_inner", "n_layer", "n_positions",
            "n_ctx", "reorder_and_upcast_attn", "resid_pdrop", "scale_attn_by_inverse_layer_idx",
            "scale_attn_weights", "summary_activation", "summary_first_dropout",
            "summary_proj_to_labels", "summary_type", "summary_use_proj", "vocab_size",
        }
    )

    @classmethod
    def unsupported_values(cls, config) -> list[str]:
        if getattr(config, "add_cross_attention", False):
            return ["add_cross_attention=True (encoder-decoder cross attention)"]
        return []

    @classmethod
    def read_dims(cls, config) -> ModelDims:
        return ModelDims(
            n_layers=config.n_layer,
            d_model=config.n_embd,
            n_heads=config.n_head,
            n_kv_heads=config.n_head,
            d_head=config.n_embd // config.n_head,
            d_mlp=config.n_inner or 4 * config.n_embd,
            d_vocab=config.vocab_size,
        )

    def blocks(self):
        return self.model.transformer.h

    def embed(self):
        return self.model.transformer.wte

    def final_norm(self):
        return self.model.transformer.ln_f

    def attn(self, layer):
        return self.blocks()[layer].attn

    def mlp(self, layer):
        return self.blocks()[layer].mlp

    def mlp_norm(self, layer):
        return self.blocks()[layer].ln_2

    def out_proj(self, layer):
        return self.attn(layer).c_proj

    def down_proj(self, layer):
        return self.mlp(layer).c_proj

    def qkv_point(self, layer, which):
        d = self.dims
        i = "qkv".index(which)
        spec = fused_slice(i * d.d_model, (i + 1) * d.d_model, d.n_heads, d.d_head)
        return HookPoint(self.attn(layer).c_attn, "out", **spec)
