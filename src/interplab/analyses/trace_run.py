"""``interplab trace``: causal tracing (Meng et al. 2022, ROME; ``analyses.causal_tracing``) on
the built-in facts task, as a run record: the effect of restoring each (layer, position) state
of the noised subject run, with CIs, drawn over the prompt's tokens."""

from __future__ import annotations

from dataclasses import dataclass

from interplab.analyses.causal_tracing import CausalTracingConfig, CausalTracingResult, causal_tracing
from interplab.analyses.patching_report import PatchingReport
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Text
from interplab.core.config import RunFields, param
from interplab.tasks.aligned import aligned_task


@dataclass(frozen=True)
class TraceRunConfig(RunFields, CausalTracingConfig):
    """Causal tracing (ROME) on the built-in facts task."""

    n: int = param(8, help="Number of facts (one template and length).", ge=1)


@dataclass
class TraceResult(CausalTracingResult, PatchingReport):
    """A causal trace with what the report says about its prompts."""

    key = "trace"
    model_name: str = ""
    example: str = ""
    example_answer: str = ""

    def title(self) -> str:
        return f"Causal tracing of facts ({self.config.kind}) on {self.model_name}"

    def section_title(self) -> str:
        return f"Restoring {self.config.kind} (layer × position)"

    def intro(self) -> list[Block]:
        return [Text(f"{self.effects.shape[0]} prompts, e.g. {self.example!r} → {self.example_answer!r}; "
                     f"noise std {self.noise_std:.4f} on the subject tokens; effects: 0 = corrupted, 1 = clean.")]

    def headline(self) -> dict:
        return {"noise_std": self.noise_std, **super().headline()}


@register_analysis("trace", config=TraceRunConfig, result=TraceResult,
                   help="causal tracing (ROME) on the facts task",
                   run_name=lambda c: f"trace-{c.kind}", example={"n": 2, "n_resamples": 50})
def trace(cfg: TraceRunConfig, ctx: Context) -> TraceResult:
    model = ctx.model
    task = aligned_task(model, "facts", cfg.n, cfg.seed)
    ctx.phase(f"tracing {cfg.kind} over {len(task)} prompts")
    wrong = task.wrong if cfg.metric == "logit_diff" else None  # prob reads the answer only
    result = causal_tracing(model, task.clean, task.meta["subject_positions"], task.answers, wrong, config=cfg)
    return TraceResult(**vars(result), model_name=model.source.get("name", ""), example=task.clean_text[0],
                       example_answer=task.meta["answer_words"][0])
