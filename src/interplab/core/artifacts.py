"""Artifacts are directories written atomically, with provenance (DESIGN rule 8).

``atomic_directory`` hands out a hidden temp directory next to the target and renames it into
place only when the block finishes without an exception, so a killed process never leaves a
directory that looks complete. ``write_json`` / ``write_bytes`` do the same for one file.
``provenance`` says what produced an artifact: package versions, git commit, model, seed, time.

Reading is checked (``read_json``, ``load_tensors``): a truncated or damaged file, or one whose
SHA-256 differs from the one recorded when it was written (``write_artifact`` records its
tensors file's in ``provenance.json["files"]``), is an ``ArtifactError`` naming the file, never
a raw parser traceback. A full disk is an ``ArtifactError`` too (safetensors reports it as its
own ``SafetensorError``, not as ``OSError``: ``is_disk_full`` knows both).
"""

from __future__ import annotations

import errno
import hashlib
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
from safetensors import SafetensorError

from interplab.core.errors import InterplabError
from interplab.core.locks import owner_suffix, remove_stale_temps


class ArtifactError(InterplabError):
    """A file that cannot be written (full disk) or read back as written (missing, truncated,
    damaged, or different from the hash recorded when it was written)."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the quota) is full: an ``OSError`` with ENOSPC/EDQUOT,
    or safetensors' own ``SafetensorError`` wrapping one (``... (os error 28)``)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(err, SafetensorError):
        text = str(err)
        return "No space left" in text or "os error 28" in text or "quota exceeded" in text.lower()
    return False


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path, error: type[InterplabError] = ArtifactError, fix: str = "") -> dict:
    """The JSON object in ``path``; a missing, truncated or damaged file raises ``error`` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise error(f"{path} is missing. {fix}".strip()) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is not valid JSON ({err}): the file is truncated or damaged. {fix}".strip()) from None
    if not isinstance(data, dict):
        raise error(f"{path} holds a JSON {type(data).__name__}, not an object: the file is damaged. {fix}".strip())
    return data


def load_tensors(path: str | Path, sha256: str | None = None, error: type[InterplabError] = ArtifactError,
                 fix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path`` (checked against ``sha256`` when given); a
    missing, truncated, damaged or different file raises ``error`` naming it."""
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path} is missing. {fix}".strip()) from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise error(f"{path} is corrupt: its SHA-256 differs from the one recorded when it was written. {fix}".strip())
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise error(f"{path} is not a readable safetensors file ({err}): it is truncated or damaged. {fix}".strip()) from None


def load_finite_tensors(path: str | Path, sha256: str | None = None, fix: str = "",
                        neg_inf_ok: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``load_tensors``, refusing a tensor that holds NaN or inf (see ``non_finite``): weights
    like that would make everything computed with them NaN."""
    tensors = load_tensors(path, sha256, fix=fix)
    bad = non_finite(tensors, neg_inf_ok)
    if bad:
        raise ArtifactError(f"{path}: {bad}; computing with it would give NaN. {fix}".strip())
    return tensors


def load_artifact_tensors(directory: str | Path, tensors_file: str, fix: str = "",
                          neg_inf_ok: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of an artifact written by ``write_artifact``, checked against the SHA-256 its
    ``provenance.json`` records (artifacts from before it did are not) and refused if not finite."""
    directory = Path(directory)
    prov = directory / "provenance.json"
    files = read_json(prov, fix=fix).get("files") if prov.is_file() else None
    return load_finite_tensors(directory / tensors_file, (files or {}).get(tensors_file), fix, neg_inf_ok)


def non_finite(tensors: dict[str, torch.Tensor], neg_inf_ok: tuple[str, ...] = ()) -> str | None:
    """The first floating tensor holding NaN or inf, described (None if all are finite); a name
    ending in one of ``neg_inf_ok`` may hold -inf (e.g. a log-threshold of 0)."""
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        bad = t.isnan() | (t == float("inf"))
        if not name.endswith(neg_inf_ok):
            bad |= t == float("-inf")
        if bool(bad.any()):
            return f"tensor {name!r} holds {int(bad.sum())} non-finite values (NaN or inf) of {t.numel()}"
    return None


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
        "torch_threads": torch.get_num_threads(),
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
    (safetensors) + ``provenance.json`` (which records the tensors file's SHA-256 under
    ``files``), written into a temp directory renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    try:
        with atomic_directory(path, overwrite=overwrite) as tmp:
            write_json(tmp / "config.json", meta)
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / tensors_file))
            files = {tensors_file: sha256_file(tmp / tensors_file)}
            write_json(tmp / "provenance.json", provenance(model, **provenance_extra, files=files))
    except (OSError, SafetensorError) as err:
        if not is_disk_full(err):
            raise
        raise ArtifactError(f"Disk full while writing {path}: nothing was written (the partial copy was "
                            "removed). Free some space and save again.") from err
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
    remove_stale_temps(path.parent)
    tmp = path.with_name(f".incomplete-{path.name}-{owner_suffix()}")
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
