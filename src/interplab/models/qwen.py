"""Qwen2 and Qwen3 (Qwen3 adds per-head QK RMSNorm after the q/k projections)."""

from __future__ import annotations

from interplab.models.llama import DecoderAdapter
from interplab.models.registry import register_adapter

_QWEN_KEYS = frozenset(
    {
        "attention_bias", "head_dim", "hidden_act", "hidden_size", "intermediate_size",
        "layer_types", "max_window_layers", "num_attention_heads", "num_hidden_layers",
        "num_key_value_heads", "rms_norm_eps", "rope_parameters", "rope_scaling", "rope_theta",
        "sliding_window", "use_sliding_window", "vocab_size",
    }
)


@register_adapter
class QwenAdapter(DecoderAdapter):
    """Sites: q / k are the projection outputs, before Qwen3's q_norm / k_norm and rotary."""

    name = "qwen"
    model_types = ("qwen2", "qwen3")
    family_keys = _QWEN_KEYS
