"""What the machine does fast, for defaults that depend on it.

``native_bf16`` says whether bfloat16 matmuls are native on a device: on CUDA when the GPU
supports bf16; on CPU when the processor has AVX512-BF16 or AMX-BF16 (read from
``/proc/cpuinfo``; elsewhere assumed absent) *and* no ISA limit in the environment keeps torch
from using them (``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16``, ``ATEN_CPU_CAPABILITY`` of
``avx2`` / ``default``). Without native bf16 torch emulates it and a bf16 matmul is many times
*slower* than float32 (``benchmarks/cpu_bf16.py``), so ``auto`` settings choose bfloat16 only
where it is native.

(Measured with torch 2.13 on an AMX CPU: ``ONEDNN_MAX_CPU_ISA=AVX2`` alone moves bf16 matmuls
off oneDNN to torch's fallback, ~50x slower than float32; ``ATEN_CPU_CAPABILITY=avx2`` alone
leaves them on oneDNN, still faster than float32 (SAE step 0.29 s vs 0.37 s). It is honoured
anyway, conservatively: it says the run should behave like a CPU without bf16, and float32 is
never the slow choice.)

Thread counts: ``core.threads``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# oneDNN ISA names (ONEDNN_MAX_CPU_ISA, or its old name DNNL_MAX_CPU_ISA) below AVX512_CORE_BF16:
# with one of these as the limit oneDNN has no bf16 dot-product kernels, so bf16 is emulated.
ONEDNN_BELOW_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_MIC",
                               "AVX512_MIC_4OPS", "AVX512_CORE", "AVX512_CORE_VNNI"})
ATEN_BELOW_BF16 = frozenset({"default", "avx2"})


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


def isa_limited_below_bf16(environ=None) -> str | None:
    """The environment variable (``NAME=value``) that keeps torch's CPU kernels below bf16, or None."""
    env = os.environ if environ is None else environ
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = env.get(name, "").strip()
        if value.upper() in ONEDNN_BELOW_BF16:
            return f"{name}={value}"
    value = env.get("ATEN_CPU_CAPABILITY", "").strip()
    if value.lower() in ATEN_BELOW_BF16:
        return f"ATEN_CPU_CAPABILITY={value}"
    return None


def native_bf16(device: str | torch.device = "cpu") -> bool:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in _cpu_flags() for flag in CPU_BF16_FLAGS) and isa_limited_below_bf16() is None
    return False


def resolve_matmul_dtype(choice: str, device: str | torch.device = "cpu") -> str:
    """``auto`` → "bfloat16" where bf16 matmuls are native on ``device``, else "float32"."""
    if choice != "auto":
        return choice
    return "bfloat16" if native_bf16(device) else "float32"
