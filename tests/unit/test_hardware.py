"""``auto`` precision picks bfloat16 only where bf16 matmuls are native."""

import pytest

from interplab.core import hardware


@pytest.mark.parametrize(("flags", "expected"), [
    ({"avx2", "fma"}, "float32"), ({"avx2", "avx512f"}, "float32"),
    ({"avx512f", "avx512_bf16"}, "bfloat16"), ({"amx_bf16"}, "bfloat16")])
def test_auto_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: frozenset(flags))
    assert hardware.resolve_matmul_dtype("auto", "cpu") == expected
    assert hardware.resolve_matmul_dtype("float32", "cpu") == "float32"
    assert hardware.resolve_matmul_dtype("bfloat16", "cpu") == "bfloat16"
