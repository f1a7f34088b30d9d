"""``interplab.load``: a HookedModel from a default name, local directory, GGUF file or hub id."""

from __future__ import annotations

import torch

from interplab.core.errors import ConfigError
from interplab.models.loading import load_hf
from interplab.runtime.hooked import HookedModel

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load(name_or_path: str = "smollm2-135m", dtype: torch.dtype | str = torch.float32,
         device: str | torch.device = "cpu", attn_implementation: str = "eager",
         strict_config: bool = True) -> HookedModel:
    """Load a model for instrumented runs.

    ``attn_implementation`` defaults to "eager" so attention patterns exist as tensors; pass
    "sdpa" for speed when you need no ``attn.pattern`` site. ``strict_config`` refuses HF
    config keys the adapter does not understand (recommended).
    """
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ConfigError(f"Unknown dtype {dtype!r}; valid: {', '.join(_DTYPES)}.")
        dtype = _DTYPES[dtype]
    model, tokenizer, info = load_hf(
        name_or_path, dtype=dtype, device=str(device), attn_implementation=attn_implementation,
        strict_config=strict_config,
    )
    return HookedModel(model, tokenizer, source=info)
