"""Run ids: a run record's path relative to RUNS_DIR, in POSIX form. A request names a run only
by id, and an id resolves only to a directory inside RUNS_DIR (after following symlinks), so no
request reads outside it."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from interplab.core.errors import InputError


class NotFound(InputError):
    """A run (or other item) the UI does not have: a 404 naming it."""


def run_id(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def resolve_run(root: Path, rid: str) -> Path:
    """The directory of run ``rid`` under ``root`` (one holding a config.json); NotFound for
    anything else, ``..``, hidden names and symlinks leading out of ``root`` included."""
    parts = PurePosixPath(rid).parts
    if not parts or rid.startswith("/") or "\\" in rid or any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise NotFound(f"No run {rid!r} here: a run id is a path inside the runs directory.")
    real = (root / rid).resolve()
    if not real.is_relative_to(root.resolve()) or not (real / "config.json").is_file():
        raise NotFound(f"No run {rid!r} in {root}.")
    return root / rid
