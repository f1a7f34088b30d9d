"""Provenance of a run: what produced it, from which code, model and seed, where and when."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

import interplab


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the interplab checkout, when it is one (None for an installed wheel)."""
    here = Path(interplab.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(model=None, seed: int | None = None, started: str | None = None) -> dict:
    import transformers

    info = {
        "interplab_version": interplab.__version__,
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
    return info
