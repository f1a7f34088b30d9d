"""Run records: a directory per run, written atomically.

Layout: ``config.json``, ``results.safetensors`` (tensors), ``results.json`` (numbers and
labels), ``provenance.json``, ``figures/*.png``, ``report.html``. Everything is written into a
hidden ``.incomplete-*`` directory first and renamed into place only when the run finishes,
so a killed run never leaves a directory that looks complete; ``list_runs`` lists only
complete ones. The hidden name ends in the writer's ``<pid>@<host>``, so a new run in the same
root deletes the ``.incomplete-*`` directories of processes that died (never one of a live
process, nor of another machine's). Two runs finishing at once in the same second never take
the same name: the rename that publishes a run picks the next free suffix. A full disk while
writing the record is an ``ArtifactError`` that says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from interplab.core.artifacts import ArtifactError, is_disk_full
from interplab.core.locks import owner_suffix, remove_stale_temps
from interplab.runs.provenance import now, provenance


def _default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    return str(o)


class RunRecord:
    """Context manager that owns one run directory until it is complete."""

    def __init__(self, root: str | Path, name: str, config, model=None, seed: int | None = None):
        self.root = Path(root)
        self.config, self.model, self.seed = config, model, seed
        self.started = now()
        self._base = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self._n = 1
        self.final = self.root / self._base
        while self.final.exists():
            self._next_name()
        self.path = self.root / f".incomplete-{self.final.name}-{owner_suffix()}"
        self._tensors: dict[str, torch.Tensor] = {}
        self._results: dict = {}

    def _next_name(self) -> None:
        self._n += 1
        self.final = self.root / f"{self._base}-{self._n}"

    def __enter__(self) -> RunRecord:
        self._made_root = not self.root.exists()
        remove_stale_temps(self.root)  # what runs killed earlier left behind
        self.root.mkdir(parents=True, exist_ok=True)
        while True:  # another record of this process may have the same name (same second)
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                self._next_name()
                self.path = self.root / f".incomplete-{self.final.name}-{owner_suffix()}"
        (self.path / "figures").mkdir()
        self.write_json("config.json", self.config)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            if self._tensors:
                save_file({k: v.detach().cpu().contiguous() for k, v in self._tensors.items()},
                          str(self.path / "results.safetensors"))
            self.write_json("results.json", self._results)
            self.write_json("provenance.json", provenance(self.model, self.seed, self.started))
        except (OSError, SafetensorError) as err:
            self._discard()
            if not is_disk_full(err):
                raise
            raise ArtifactError(f"Disk full while writing the run record {self.final}: the run finished but "
                                "its record was not kept. Free some space and run it again.") from err
        self._publish()
        self.path = self.final
        from interplab.runs.tracking import track

        track(self.final)

    def _discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._made_root:  # a failed first run leaves no empty directory behind
            with contextlib.suppress(OSError):
                self.root.rmdir()

    def _publish(self) -> None:
        """Rename the record into place: the one step that makes the run visible. Another run
        that took the same name meanwhile keeps it; this one takes the next suffix."""
        while True:
            try:
                os.rename(self.path, self.final)  # onto a (never empty) existing record: fails
                return
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not self.final.exists():
                    raise
            self._next_name()

    def write_json(self, name: str, data) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, default=_default))

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path

    def add_tensors(self, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
        for key, value in tensors.items():
            if value is not None:
                self._tensors[f"{prefix}.{key}"] = value

    def add_results(self, key: str, value) -> None:
        self._results[key] = value

    def set_results(self, tree: dict, tensors: dict[str, torch.Tensor]) -> None:
        """The whole of results.json and results.safetensors (what the runner writes)."""
        self._results = dict(tree)
        self._tensors = dict(tensors)

    def save_figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as figures/NAME.png; return the path relative to the run."""
        import matplotlib.pyplot as plt

        rel = f"figures/{name}.png"
        fig.savefig(self.path / rel, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return rel


def list_runs(root: str | Path) -> list[Path]:
    """Complete run directories under ``root`` (incomplete ones are hidden), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "provenance.json").is_file())
