"""``interplab path-patch``: path patching (Wang et al. 2022; ``analyses.path_patching``) on a
task's aligned pairs, every head of the earlier layers as a sender into the given receivers, as
a run record: each sender's effect through the receivers only, with CIs."""

from __future__ import annotations

from dataclasses import dataclass

from interplab.analyses.patching_report import PatchingReport
from interplab.analyses.path_patching import PathPatchingConfig, PathPatchingResult, path_patching
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Text
from interplab.core.config import RunFields, TaskFields
from interplab.tasks.aligned import aligned_task


@dataclass(frozen=True)
class PathPatchRunConfig(RunFields, TaskFields, PathPatchingConfig):
    """Path patching: every earlier head as sender, into the given receivers (comma-separated
    sites, e.g. 'L23.attn.q[h0],L23.attn.q[h1]')."""


@dataclass
class PathPatchResult(PathPatchingResult, PatchingReport):
    """Path-patching effects with the model they were measured on."""

    key = "path"
    model_name: str = ""

    def title(self) -> str:
        return f"Path patching into {', '.join(self.config.receivers)} on {self.model_name}"

    def section_title(self) -> str:
        return "Sender heads → receivers"

    def intro(self) -> list[Block]:
        return [Text("Effect of each sender head through the receivers only (1 = clean, 0 = corrupt).")]


@register_analysis("path-patch", config=PathPatchRunConfig, result=PathPatchResult,
                   help="path patching into receiver sites", run_name=lambda c: "path-patch",
                   example={"receivers": "L1.attn.q[h0]", "task": "ioi", "n": 2, "n_resamples": 50})
def path_patch(cfg: PathPatchRunConfig, ctx: Context) -> PathPatchResult:
    model = ctx.model
    task = aligned_task(model, cfg.task, cfg.n, cfg.seed)
    ctx.phase(f"path patching into {', '.join(cfg.receivers)} over {len(task)} pairs")
    result = path_patching(model, task.clean, task.corrupt, task.answers, task.wrong, cfg)
    return PathPatchResult(**vars(result), model_name=model.source.get("name", ""))
