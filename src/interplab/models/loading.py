"""Loading an HF causal LM from a default name, a local directory, a GGUF file or a hub id.

GGUF files are dequantized by transformers (17–60 s on two CPU cores), so the first load
converts once into a safetensors directory under the cache (``$INTERPLAB_HOME``, default
``~/.cache/interplab``) and every later load reads that. The conversion is written to a
temporary directory and renamed into place, so a killed conversion never looks complete.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch

from interplab.core.artifacts import sha256_file
from interplab.core.errors import MissingDependencyError, ModelNotFoundError, choices
from interplab.models.defaults import DEFAULTS
from interplab.models.registry import adapter_class_for

log = logging.getLogger(__name__)
META = "interplab_source.json"


def cache_root() -> Path:
    return Path(os.environ.get("INTERPLAB_HOME", Path.home() / ".cache" / "interplab"))


def require_gguf() -> None:
    missing = []
    for module in ("gguf", "accelerate"):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependencyError(
            f"Loading a GGUF file needs the optional packages {', '.join(missing)}, which are "
            "not installed. Install them with `pip install 'interplab[gguf]'` (or "
            "`pip install gguf accelerate`), or load a safetensors directory instead."
        )


def _gguf_cache_dir(gguf: Path) -> Path:
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    return cache_root() / "models" / f"{gguf.stem}-{key[:12]}"


def convert_gguf(gguf: Path, name: str | None = None) -> Path:
    """Dequantize a GGUF file once into a cached safetensors directory; return the directory."""
    target = _gguf_cache_dir(gguf)
    if (target / META).is_file():
        return target
    require_gguf()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    adapter_class_for(config).check_config(config)  # refuse before the slow part
    log.info("Converting %s to safetensors (one-off, ~20-60 s)", gguf)
    start = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are now dense float32; drop the quantizer so save_pretrained writes them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    meta = {"name": name, "gguf": str(gguf), "gguf_sha256": sha256_file(gguf),
            "converted_s": round(time.time() - start, 1)}
    (tmp / META).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _weights_hash(directory: Path) -> str:
    """A cheap content id: SHA-256 over the safetensors headers and sizes."""
    digest = hashlib.sha256()
    for f in sorted(directory.glob("*.safetensors")):
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            digest.update(fh.read(n))
        digest.update(str(f.stat().st_size).encode())
    return digest.hexdigest()


def resolve(name_or_path: str) -> tuple[str, Path | str, dict]:
    """Where a model comes from: ("dir", path), ("gguf", path) or ("hub", id)."""
    if name_or_path in DEFAULTS:
        gguf = DEFAULTS[name_or_path].locate(cache_root())
        return "gguf", gguf, {"name": name_or_path, "default": True}
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return "gguf", path, {"name": path.stem}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory without config.json; it is not an HF model.")
        return "dir", path, {"name": path.name}
    if path.exists():
        raise ModelNotFoundError(f"{path} is neither a .gguf file nor an HF model directory.")
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        return "hub", name_or_path, {"name": name_or_path}
    raise ModelNotFoundError(
        f"Unknown model {name_or_path!r}. Embedded defaults: {choices(DEFAULTS)}. You can also "
        "pass a local HF directory, a .gguf file, or a hub id like 'EleutherAI/pythia-70m' "
        "(hub ids need a network)."
    )


def merge_source(info: dict, meta: dict) -> dict:
    """Source facts of a load: what was asked for wins over the cached conversion's metadata
    (which records whoever converted the file first, possibly under no name)."""
    return {**meta, **{k: v for k, v in info.items() if v is not None}}


def load_hf(name_or_path: str, dtype: torch.dtype = torch.float32, device: str = "cpu",
            attn_implementation: str = "eager", strict_config: bool = True):
    """Load (model, tokenizer, source-info) for ``interplab.load``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kind, where, info = resolve(name_or_path)
    if kind == "gguf":
        where = convert_gguf(Path(where), info.get("name"))
        info = merge_source(info, json.loads((where / META).read_text()))
    local = kind != "hub"
    try:
        config = AutoConfig.from_pretrained(str(where), local_files_only=local)
    except OSError as err:
        raise ModelNotFoundError(
            f"Could not load the config of {name_or_path!r}: {err}. Hub ids need a network; "
            f"offline, use an embedded default ({choices(DEFAULTS)}) or a local directory."
        ) from err
    if strict_config:
        adapter_class_for(config).check_config(config)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if local:
        hf_logging.disable_progress_bar()  # a cached load takes about a second; no bar
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(where), config=config, dtype=dtype, attn_implementation=attn_implementation,
            local_files_only=local,
        ).to(device)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.eval()
    model.requires_grad_(False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=local)
    except (OSError, ValueError):
        tokenizer = None
    info.update({"source": str(where), "kind": kind})
    if local:
        info["weights_hash"] = _weights_hash(Path(where))
    return model, tokenizer, info


def list_models() -> list[dict]:
    """Every default (installed? converted?) and every converted cache entry."""
    rows, default_files = [], set()
    for name, m in DEFAULTS.items():
        row = {"name": name, "description": m.description, "installed": False, "cached": False}
        try:
            gguf = m.locate(cache_root(), assemble=False)  # listing never writes
            default_files.add(str(gguf))
            cached = gguf.is_file() and (_gguf_cache_dir(gguf) / META).is_file()
            row.update(installed=True, cached=cached, path=str(gguf))
        except ModelNotFoundError:
            row["install"] = m.install
        rows.append(row)
    for meta in sorted((cache_root() / "models").glob(f"*/{META}")):
        data = json.loads(meta.read_text())
        if data.get("gguf") not in default_files:
            rows.append({"name": data.get("gguf"), "description": "converted GGUF",
                         "installed": True, "cached": True, "path": str(meta.parent)})
    return rows
