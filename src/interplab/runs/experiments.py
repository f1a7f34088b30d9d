"""Config-driven runs: ``interplab run config.yaml`` and the per-analysis subcommands.

A config file names an analysis and its fields::

    analysis: patching          # or: ioi_demo, causal_tracing, path_patching, heads
    model: smollm2-135m
    task: ioi
    n: 8
    sweep: heads
    direction: denoising
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.core.config import param
from interplab.core.errors import ConfigError, choices
from interplab.runs.record import RunRecord
from interplab.runs.report import Report
from interplab.runs.sections import aligned_task, patching_section


@dataclass(frozen=True)
class PatchRunConfig:
    """An activation-patching sweep on a registered task, written as a run record."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    task: str = param("ioi", help="Registered task (ioi, greater_than, induction, facts, sva).")
    n: int = param(8, help="Number of clean/corrupt pairs (one template and length).")
    sweep: str = param("resid_pre", help="resid_pre, resid_mid, resid_post, attn_out, mlp_out, heads, heads_by_position.")
    direction: str = param("denoising", help="denoising or noising.")
    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl.")
    seed: int = param(0, help="Seed of the prompts and statistics.")
    n_resamples: int = param(2000, help="Bootstrap resamples.")
    out: str = param("runs", help="Directory for run records.")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}.")
        self.patching()  # validates sweep / direction / metric before any work

    def patching(self) -> PatchingConfig:
        return PatchingConfig(sweep=self.sweep, direction=self.direction, metric=self.metric,
                              seed=self.seed, n_resamples=self.n_resamples)


def patch_run(config: PatchRunConfig, model=None) -> Path:
    from interplab.runtime.loading import load
    model = model or load(config.model)
    task = aligned_task(model, config.task, config.n, config.seed)
    result = activation_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                                 config.patching())
    report = Report(f"{config.task}: {config.direction} patching of {config.sweep} on {model.source.get('name')}")
    report.text(f"{len(task)} pairs, e.g. clean {task.clean_text[0]!r} / corrupt {task.corrupt_text[0]!r}.")
    with RunRecord(config.out, f"patch-{config.task}-{config.sweep}", config, model, config.seed) as run:
        patching_section(run, report, "patching", result, f"{config.direction} patching of {config.sweep}")
        run.write_text("report.html", report.render())
    return run.final


def _build(cls, data: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"Unknown fields {unknown} for {cls.__name__}; valid: {sorted(names)}.")
    return cls(**data)


def run_config_file(path: str | Path) -> Path:
    from interplab.runs.ioi_demo import IOIDemoConfig, ioi_demo

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "analysis" not in data:
        raise ConfigError(f"{path} must be a mapping with an 'analysis' key, e.g. 'analysis: patching'.")
    analysis = data.pop("analysis")
    from interplab.activations import HarvestConfig
    from interplab.runs import more_runs as m
    from interplab.runs.probe_runs import ProbeRunConfig, probe_run
    from interplab.runs.sae_runs import (
        EvalSaeConfig,
        TrainSaeConfig,
        eval_sae_run,
        harvest_run,
        train_sae_run,
    )
    from interplab.runs.steer_runs import SteerRunConfig, steer_run

    runners = {"patching": (PatchRunConfig, patch_run), "ioi_demo": (IOIDemoConfig, ioi_demo),
               "causal_tracing": (m.TraceRunConfig, m.trace_run),
               "path_patching": (m.PathPatchRunConfig, m.path_patch_run),
               "heads": (m.HeadsRunConfig, m.heads_run), "dla": (m.DLARunConfig, m.dla_run),
               "attribution": (m.AttributeRunConfig, m.attribute_run),
               "harvest": (HarvestConfig, lambda c: harvest_run(c).path),
               "train_sae": (TrainSaeConfig, train_sae_run), "eval_sae": (EvalSaeConfig, eval_sae_run),
               "probe": (ProbeRunConfig, probe_run), "steer": (SteerRunConfig, steer_run)}
    if analysis not in runners:
        raise ConfigError(f"Unknown analysis {analysis!r}. Valid: {choices(runners)}.")
    cls, fn = runners[analysis]
    return fn(_build(cls, data))
