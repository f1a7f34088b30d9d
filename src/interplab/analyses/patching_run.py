"""``interplab patch``: one activation-patching sweep (``analyses.patching``) on a registered
task's aligned clean/corrupt pairs, as a run record: every cell's mean effect with its bootstrap
CI, permutation p and BH q, drawn as a heatmap, with the top cells in a table."""

from __future__ import annotations

from dataclasses import dataclass, field

from interplab.analyses.patching import PatchingConfig, PatchingResult, activation_patching
from interplab.analyses.patching_report import PatchingReport
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Text
from interplab.core.config import RunFields, TaskFields
from interplab.runtime.flops import plain_forward_rate
from interplab.tasks.aligned import aligned_task

# The speed reference's size cap: a plain forward of about as many tokens as the sweep's
# largest forward, at most this many (a second or two on a CPU for a 135M model).
REFERENCE_TOKENS = 1024


@dataclass(frozen=True)
class PatchRunConfig(RunFields, TaskFields, PatchingConfig):
    """An activation-patching sweep on a registered task, written as a run record."""


@dataclass
class PatchRunResult(PatchingResult, PatchingReport):
    """A patching sweep with what the report says about its prompts."""

    model_name: str = ""
    task: str = ""
    clean_example: str = ""
    corrupt_example: str = ""
    position_roles: dict[int, str] = field(default_factory=dict)  # prompt position -> role (io, s1, …)

    def title(self) -> str:
        c = self.config
        return f"{self.task}: {c.direction} patching of {c.sweep} on {self.model_name}"

    def section_title(self) -> str:
        return f"{self.config.direction} patching of {self.config.sweep}"

    def intro(self) -> list[Block]:
        return [Text(f"{self.effects.shape[0]} pairs, e.g. clean {self.clean_example!r} / corrupt "
                     f"{self.corrupt_example!r}.")]


@register_analysis("patch", config=PatchRunConfig, result=PatchRunResult,
                   help="one activation-patching sweep on a task, as a run record",
                   run_name=lambda c: f"patch-{c.task}-{c.sweep}",
                   example={"task": "ioi", "n": 2, "n_resamples": 50})
def patch(cfg: PatchRunConfig, ctx: Context) -> PatchRunResult:
    model = ctx.model
    task = aligned_task(model, cfg.task, cfg.n, cfg.seed)
    ctx.phase(f"patching {cfg.sweep} over {len(task)} pairs")
    result = activation_patching(model, task.clean, task.corrupt, task.answers, task.wrong, cfg)
    if result.cost is not None:  # the reference: a plain forward of about the sweep's size
        rows = max(1, min(result.cost.tokens, REFERENCE_TOKENS) // task.clean.shape[1])
        ctx.phase(f"timing a plain forward of {rows} prompts for the speed reference")
        result.cost.reference_rate, _ = plain_forward_rate(
            model, task.clean.input_ids[:1].repeat(rows, 1), last_only=True)
        result.cost.reference_tokens = rows * task.clean.shape[1]
    return PatchRunResult(**vars(result), model_name=model.source.get("name", ""), task=cfg.task,
                          clean_example=task.clean_text[0], corrupt_example=task.corrupt_text[0],
                          position_roles=task.role_labels())
