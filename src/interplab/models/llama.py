"""Llama family (SmolLM2, Llama 2/3, Mistral-style layouts without sliding windows)."""

from __future__ import annotations

from interplab.core.dims import ModelDims
from interplab.models.adapter import Adapter
from interplab.models.hookpoint import HookPoint, heads
from interplab.models.registry import register_adapter


class DecoderAdapter(Adapter):
    """Pre-norm decoder with q/k/v/o_proj and a gated MLP (Llama, Qwen, Gemma layouts)."""

    @classmethod
    def read_dims(cls, config) -> ModelDims:
        d_head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return ModelDims(
            n_layers=config.num_hidden_layers,
            d_model=config.hidden_size,
            n_heads=config.num_attention_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
            d_head=d_head,
            d_mlp=config.intermediate_size,
            d_vocab=config.vocab_size,
        )

    def blocks(self):
        return self.model.model.layers

    def embed(self):
        return self.model.model.embed_tokens

    def final_norm(self):
        return self.model.model.norm

    def attn(self, layer):
        return self.blocks()[layer].self_attn

    def mlp(self, layer):
        return self.blocks()[layer].mlp

    def mlp_norm(self, layer):
        return self.blocks()[layer].post_attention_layernorm

    def out_proj(self, layer):
        return self.attn(layer).o_proj

    def down_proj(self, layer):
        return self.mlp(layer).down_proj

    def qkv_point(self, layer, which):
        d = self.dims
        n = d.n_heads if which == "q" else d.n_kv_heads
        module = getattr(self.attn(layer), f"{which}_proj")
        return HookPoint(module, "out", **heads(n, d.d_head))


@register_adapter
class LlamaAdapter(DecoderAdapter):
    name = "llama"
    model_types = ("llama",)
    family_keys = frozenset(
        {
            "attention_bias", "head_dim", "hidden_act", "hidden_size", "intermediate_size",
            "mlp_bias", "num_attention_heads", "num_hidden_layers", "num_key_value_heads",
            "pretraining_tp", "rms_norm_eps", "rope_parameters", "rope_scaling", "rope_theta",
            "vocab_size",
        }
    )

    def layers_owner(self):
        return self.model.model, "layers"

    @classmethod
    def unsupported_values(cls, config) -> list[str]:
        tp = getattr(config, "pretraining_tp", 1)
        return [] if tp in (None, 1) else [f"pretraining_tp={tp!r} (only 1 is supported)"]
