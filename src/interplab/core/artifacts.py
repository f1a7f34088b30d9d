"""Artifacts are directories written atomically, with provenance (DESIGN rule 8).

``atomic_directory`` hands out a hidden temp directory next to the target and renames it into
place only when the block finishes without an exception, so a killed process never leaves a
directory that looks complete. ``write_json`` / ``write_bytes`` do the same for one file.
``provenance`` says what produced an artifact: package versions, git commit, model, seed, time.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("interplab")
    except PackageNotFoundError:
        return "unknown"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def git_commit() -> str | None:
    """The commit of the interplab checkout, when it is one (None for an installed wheel)."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(model=None, seed: int | None = None, started: str | None = None, **extra) -> dict:
    """What produced an artifact. ``model`` is a HookedModel (duck-typed: ``source``, ``hf``)."""
    import transformers

    info = {
        "interplab_version": _version(),
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "command": sys.argv,
        "seed": seed,
        "started": started,
        "ended": now(),
    }
    if model is not None:
        src = model.source
        info.update({
            "model": src.get("name"),
            "model_source": src.get("source"),
            "weights_hash": src.get("weights_hash"),
            "gguf_sha256": src.get("gguf_sha256"),
            "device": str(model.device),
            "dtype": str(next(model.hf.parameters()).dtype),
        })
    info.update(extra)
    return info


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write a file atomically: a temp name in the same directory, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | Path, data) -> Path:
    return write_bytes(path, json.dumps(data, indent=2, default=_json_default).encode())


def write_artifact(path: str | Path, meta: dict, tensors: dict[str, torch.Tensor], tensors_file: str,
                   overwrite: bool = False, model=None, **provenance_extra) -> Path:
    """The artifact layout (DESIGN rule 8): ``config.json`` (``meta``) + ``tensors_file``
    (safetensors) + ``provenance.json``, written into a temp directory renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_directory(path, overwrite=overwrite) as tmp:
        write_json(tmp / "config.json", meta)
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / tensors_file))
        write_json(tmp / "provenance.json", provenance(model, **provenance_extra))
    return path


@contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp directory that becomes ``path`` when the block succeeds.

    With ``overwrite`` an existing ``path`` is replaced (moved aside first, deleted after the
    new one is in place); without it an existing ``path`` raises ``FileExistsError`` before
    any work.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True or pick another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".incomplete-{path.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
