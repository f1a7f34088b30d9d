"""A runs directory with one record of every registered analysis, made on the conformance test's
tiny model (a random 2-layer Llama with the default model's tokenizer), plus the eval-sae run's
feature statistics for the dashboards."""

from __future__ import annotations

import dataclasses

from interplab.runs.runner import run_analysis
from tests.integration.test_analyses_conformance import REGISTRY, _fill, outcome_config


def make_runs(world, root) -> dict[str, str]:
    """analysis name -> run id (relative to ``root``), one run each."""
    ids = {}
    for name in REGISTRY.names():
        entry = REGISTRY.get(name)
        fields = {"out": str(root / name), **{k: _fill(v, world) for k, v in entry.example.items()}}
        if "model" in {f.name for f in dataclasses.fields(entry.config)}:
            fields.setdefault("model", world["model"])
        outcome = run_analysis(name, outcome_config(name, fields), progress=False)
        ids[name] = outcome.path.relative_to(root).as_posix()
    return ids
