"""GPT-NeoX (Pythia): fused query_key_value laid out per head, optional parallel residual.

With ``use_parallel_residual`` (Pythia's default) attention and MLP both read resid_pre, so
there is no resid_mid site; asking for one raises.
"""

from __future__ import annotations

from interplab.core.dims import ModelDims
from interplab.models.adapter import Adapter
from interplab.models.hookpoint import HookPoint, interleaved
from interplab.models.registry import register_adapter


@register_adapter
class NeoXAdapter(Adapter):
    name = "gpt_neox"
    model_types = ("gpt_neox",)
    family_keys = frozenset(
        {
            "attention_bias", "hidden_act", "hidden_dropout", "hidden_size", "intermediate_size",
            "layer_norm_eps", "num_attention_heads", "num_hidden_layers", "rope_parameters",
            "rope_scaling", "rotary_emb_base", "rotary_pct", "partial_rotary_factor",
            "use_parallel_residual", "vocab_size",
        }
    )

    @classmethod
    def read_dims(cls, config) -> ModelDims:
        return ModelDims(
            n_layers=config.num_hidden_layers,
            d_model=config.hidden_size,
            n_heads=config.num_attention_heads,
            n_kv_heads=config.num_attention_heads,
            d_head=config.hidden_size // config.num_attention_heads,
            d_mlp=config.intermediate_size,
            d_vocab=config.vocab_size,
        )

    def blocks(self):
        return self.model.gpt_neox.layers

    def embed(self):
        return self.model.gpt_neox.embed_in

    def final_norm(self):
        return self.model.gpt_neox.final_layer_norm

    def unembed(self):
        # transformers 5 renamed GPT-NeoX's unembedding from embed_out to lm_head.
        return self.model.lm_head if hasattr(self.model, "lm_head") else self.model.embed_out

    def attn(self, layer):
        return self.blocks()[layer].attention

    def mlp(self, layer):
        return self.blocks()[layer].mlp

    def mlp_norm(self, layer):
        return self.blocks()[layer].post_attention_layernorm

    def out_proj(self, layer):
        return self.attn(layer).dense

    def down_proj(self, layer):
        return self.mlp(layer).dense_4h_to_h

    def layers_owner(self):
        return self.model.gpt_neox, "layers"

    def parallel_residual(self, layer):
        return bool(self.config.use_parallel_residual)

    def qkv_point(self, layer, which):
        d = self.dims
        spec = interleaved("qkv".index(which), 3, d.n_heads, d.d_head)
        return HookPoint(self.attn(layer).query_key_value, "out", **spec)
