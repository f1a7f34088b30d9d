"""Run records: a directory per run, written atomically.

Layout: ``config.json``, ``results.safetensors`` (tensors), ``results.json`` (numbers and
labels), ``provenance.json``, ``figures/*.png``, ``report.html``. Everything is written into a
hidden ``.incomplete-*`` directory first and renamed into place only when the run finishes,
so a killed run never leaves a directory that looks complete; ``list_runs`` lists only
complete ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

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
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.final = self.root / f"{name}-{stamp}"
        n = 1
        while self.final.exists():
            n += 1
            self.final = self.root / f"{name}-{stamp}-{n}"
        self.path = self.root / f".incomplete-{self.final.name}-{os.getpid()}"
        self._tensors: dict[str, torch.Tensor] = {}
        self._results: dict = {}

    def __enter__(self) -> RunRecord:
        self._made_root = not self.root.exists()
        self.path.mkdir(parents=True)
        (self.path / "figures").mkdir()
        self.write_json("config.json", self.config)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            if self._made_root:  # a failed first run leaves no empty directory behind
                with contextlib.suppress(OSError):
                    self.root.rmdir()
            return
        if self._tensors:
            save_file({k: v.detach().cpu().contiguous() for k, v in self._tensors.items()},
                      str(self.path / "results.safetensors"))
        self.write_json("results.json", self._results)
        self.write_json("provenance.json", provenance(self.model, self.seed, self.started))
        os.replace(self.path, self.final)  # the one step that makes the run visible
        self.path = self.final
        from interplab.runs.tracking import track

        track(self.final)

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
