"""Loading (defaults, local dir, GGUF, hub id) and one adapter file per family."""

from interplab.models import gemma3, gpt2, llama, neox, qwen, toy_adapter  # noqa: F401  (register adapters)
from interplab.models.adapter import Adapter
from interplab.models.registry import ADAPTERS, adapter_for, register_adapter

__all__ = ["ADAPTERS", "Adapter", "adapter_for", "register_adapter"]
