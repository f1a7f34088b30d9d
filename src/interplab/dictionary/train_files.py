"""The files of a training run: per-dictionary run directories, metrics.jsonl, final artifacts.

``out_dir/<name>/`` is one dictionary's run directory: ``metrics.jsonl`` grows there during
training; at the end the directory is replaced, in one rename, by the saved dictionary
(``config.json``, ``weights.safetensors``, ``provenance.json``) plus ``metrics.jsonl`` and
``training.json``. The metrics of a resumed run are truncated to the checkpoint's step first,
so the file ends up equal to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from interplab.core.artifacts import write_bytes, write_json
from interplab.dictionary.base import Dictionary, DictionaryConfig

# Architectures whose name leaves out k (they do not use it).
NO_K = frozenset({"relu", "jumprelu"})


def dictionary_name(cfg: DictionaryConfig) -> str:
    """``<site>[-<target site>].<arch>.<d_sae>[.k<k>]``, e.g. ``L5.resid_post.topk.9216.k32``."""
    site = cfg.input_site if cfg.target_site == cfg.input_site else f"{cfg.input_site}-{cfg.target_site}"
    name = f"{site}.{cfg.arch}.{cfg.d_sae}"
    return name if cfg.arch in NO_K else f"{name}.k{cfg.k}"


def run_names(cfgs: list[DictionaryConfig]) -> list[str]:
    """Names of the dictionaries of one run; ones that collide get a hash of their config."""
    names = [dictionary_name(c) for c in cfgs]
    out = []
    for name, cfg in zip(names, cfgs):
        if names.count(name) > 1:
            digest = hashlib.sha1(json.dumps(cfg.to_json(), sort_keys=True).encode()).hexdigest()[:8]
            name = f"{name}.{digest}"
        out.append(name)
    return out


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of steps <= ``step`` (and drop a torn last line)."""
    keep: list[str] = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                break
            if record["step"] <= step:
                keep.append(line + "\n")
    write_bytes(path, "".join(keep).encode())


def recover_run_dir(run_dir: Path) -> None:
    """Undo a publish interrupted between its two renames (the old directory is set aside)."""
    old = run_dir.with_name(f".old-{run_dir.name}")
    if not run_dir.exists() and old.exists():
        os.replace(old, run_dir)


def publish(d: Dictionary, run_dir: Path, training: dict, **provenance_extra) -> Path:
    """Replace ``run_dir`` by the saved dictionary + its metrics + ``training.json`` in one rename."""
    staging = run_dir.with_name(f".staging-{run_dir.name}")
    shutil.rmtree(staging, ignore_errors=True)
    d.save(staging, overwrite=True, **provenance_extra)
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        shutil.copy2(metrics, staging / "metrics.jsonl")
    write_json(staging / "training.json", training)
    old = run_dir.with_name(f".old-{run_dir.name}")
    if run_dir.exists():
        os.replace(run_dir, old)
    os.replace(staging, run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return run_dir
