"""What the machine does fast, for defaults that depend on it.

``native_bf16`` says whether bfloat16 matmuls are native on a device: on CUDA when the GPU
supports bf16; on CPU when the processor has AVX512-BF16 or AMX-BF16 (read from
``/proc/cpuinfo``; elsewhere assumed absent). Without them torch emulates bfloat16 and a bf16
matmul is many times *slower* than float32 (measured: ~20× on an AVX2-only CPU for the SAE
training step), so ``auto`` settings choose bfloat16 only where it is native.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: str | torch.device = "cpu") -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in _cpu_flags() for flag in CPU_BF16_FLAGS)
    return False


def resolve_matmul_dtype(choice: str, device: str | torch.device = "cpu") -> str:
    """``auto`` → "bfloat16" where bf16 matmuls are native on ``device``, else "float32"."""
    if choice != "auto":
        return choice
    return "bfloat16" if native_bf16(device) else "float32"
