"""Gemma 3 (text): sandwich norms, scaled embeddings, QK-norm, sliding-window layers.

attn_out is the output of post_attention_layernorm and mlp_out that of
post_feedforward_layernorm: the tensors the block adds to the residual stream. ``embed`` is the
scaled embedding (the module multiplies by sqrt(d_model)).
"""

from __future__ import annotations

from interplab.models.hookpoint import HookPoint
from interplab.models.llama import DecoderAdapter
from interplab.models.registry import register_adapter


@register_adapter
class Gemma3Adapter(DecoderAdapter):
    name = "gemma3"
    model_types = ("gemma3_text",)
    family_keys = frozenset(
        {
            "_sliding_window_pattern", "sliding_window_pattern", "attention_bias",
            "attn_logit_softcapping", "final_logit_softcapping", "head_dim", "hidden_activation",
            "hidden_size", "intermediate_size", "layer_types", "num_attention_heads",
            "num_hidden_layers", "num_key_value_heads", "query_pre_attn_scalar", "rms_norm_eps",
            "rope_parameters", "rope_scaling", "rope_theta", "rope_local_base_freq",
            "sliding_window", "use_bidirectional_attention", "vocab_size",
        }
    )

    @classmethod
    def unsupported_values(cls, config) -> list[str]:
        problems = []
        if getattr(config, "final_logit_softcapping", None) is not None:
            problems.append(
                f"final_logit_softcapping={config.final_logit_softcapping!r} (the logits site "
                "would miss the soft cap)"
            )
        if getattr(config, "use_bidirectional_attention", False):
            problems.append("use_bidirectional_attention=True (not a causal LM)")
        return problems

    def mlp_norm(self, layer):
        return self.blocks()[layer].pre_feedforward_layernorm

    def attn_out_point(self, layer):
        return HookPoint(self.blocks()[layer].post_attention_layernorm, "out")

    def mlp_branch(self, layer):
        return self.blocks()[layer].post_feedforward_layernorm
