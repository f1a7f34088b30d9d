"""Turning analysis results into run-record entries and report sections."""

from __future__ import annotations

import dataclasses

import torch

from interplab.runs.figures import effect_heatmap
from interplab.runs.record import RunRecord
from interplab.runs.report import Report


def patching_section(run: RunRecord, report: Report, key: str, result, title: str,
                     top: int = 10) -> None:
    """Heatmap with CIs, the top cells with their CIs / p / q, and the tensors."""
    s = result.summary
    axes = result.axes
    names = list(axes)
    raw = getattr(result, "raw", None)
    run.add_tensors(key, {"effects": result.effects, "raw": raw if raw is not None else getattr(result, "delta", None),
                          "clean_metric": result.clean_metric,
                          "corrupt_metric": result.corrupt_metric})
    if s is not None:
        run.add_tensors(key, {"mean": s.mean, "low": s.low, "high": s.high, "p": s.p, "q": s.q})
    run.add_results(key, {"config": dataclasses.asdict(result.config), "axes": axes,
                          "position_labels": getattr(result, "position_labels", [])})
    mean = result.effects.mean(0) if s is None else s.mean
    if mean.ndim != 2:
        return
    rows = [f"L{v}" for v in axes[names[0]]]
    labels = getattr(result, "position_labels", [])
    if len(names) < 2:
        return
    if names[1] == "pos" and labels:
        cols = [f"{p}:{labels[p]!r}" for p in axes["pos"]]
    else:
        cols = [f"{names[1][0]}{v}" for v in axes[names[1]]]
    fig = effect_heatmap(
        mean.float(), rows, cols, title,
        significant=None if s is None else s.significant,
        halfwidth=None if s is None else ((s.high - s.low) / 2).float(),
        xlabel=names[1],
    )
    report.heading(title)
    report.figure(run.save_figure(fig, key), f"{title}: mean over {result.effects.shape[0]} "
                  "prompts; dots: significant after Benjamini–Hochberg (q < 0.05).")
    order = mean.flatten().abs().argsort(descending=True)[:top]
    table = []
    for flat in order.tolist():
        i, j = divmod(flat, mean.shape[1])
        cell = f"L{axes[names[0]][i]} {names[1]} {cols[j]}"
        if s is None:
            table.append([cell, float(mean[i, j]), "", "", "", ""])
        else:
            table.append([cell, float(s.mean[i, j]), f"[{float(s.low[i, j]):.3f}, {float(s.high[i, j]):.3f}]",
                          float(s.p[i, j]), float(s.q[i, j]), float(s.effect_size[i, j])])
    report.table(["cell", "mean effect", f"{int(100 * (s.confidence if s else 0.95))}% CI",
                  "p (permutation)", "q (BH)", "Hedges g"], table)


def aligned_task(model, name: str, n: int, seed: int):
    """``n`` pairs of task ``name`` sharing one template and token length (what sweeps over
    positions need), drawn from a larger seeded set."""
    from interplab.core.errors import ConfigError
    from interplab.tasks import TaskConfig, make_task

    task = make_task(name, model.tokenizer, TaskConfig(n=max(40 * n, 200), seed=seed))
    task = task.largest_aligned_group()
    if len(task) < n:
        raise ConfigError(f"Only {len(task)} {name} pairs share one template; ask for n <= {len(task)}.")
    return task.select(range(n))


def baseline_rows(clean: torch.Tensor, corrupt: torch.Tensor, ci) -> list[list]:
    return [["clean", float(clean.mean()), f"[{float(ci[0].low):.3f}, {float(ci[0].high):.3f}]"],
            ["corrupt", float(corrupt.mean()), f"[{float(ci[1].low):.3f}, {float(ci[1].high):.3f}]"]]
