"""``interplab attribute``: attribution patching (Nanda 2023; Syed et al. 2023) or its IG
variant (``analyses.attribution``) on a task's aligned pairs, as a run record: every node's
estimated patching effect with CIs and, with ``compare_exact``, the estimate against exact
activation patching of the same cells (Pearson r and Kendall τ, in ``results.json["vs_exact"]``)."""

from __future__ import annotations

from dataclasses import dataclass

from interplab.analyses.attribution import AttributionConfig, AttributionResult, attribution_patching
from interplab.analyses.patching_report import PatchingReport
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heading, Scatter, Text
from interplab.core.config import RunFields, TaskFields, param
from interplab.tasks.aligned import aligned_task


@dataclass(frozen=True)
class AttributeRunConfig(RunFields, TaskFields, AttributionConfig):
    """Attribution patching (or its IG variant), by default checked against exact patching."""

    compare_exact: bool = param(True, help="Also run exact patching of the same cells and correlate.")


@dataclass
class AttributeResult(AttributionResult, PatchingReport):
    """Estimated effects, and how they agree with exact patching when it was run."""

    key = "attribution"
    model_name: str = ""
    task: str = ""
    vs_exact: dict | None = None  # {"pearson": r, "kendall": tau} when compare_exact

    def title(self) -> str:
        c = self.config
        return f"{c.method} patching of {c.nodes} ({self.task}) on {self.model_name}"

    def section_title(self) -> str:
        return f"{self.config.method} estimate of {self.config.nodes}"

    def intro(self) -> list[Block]:
        return [Text(f"Estimated normalised patching effects (0 = corrupt, 1 = clean) from {self.passes}; "
                     f"{self.seconds:.1f} s.")]

    def headline(self) -> dict:
        out = super().headline()
        if self.exact is not None:
            out |= {"pearson_vs_exact": self.pearson, "kendall_vs_exact": self.kendall}
            for name, ci in (("pearson", self.pearson_ci), ("kendall", self.kendall_ci)):
                if ci is not None:
                    out |= {f"{name}_low": float(ci.low), f"{name}_high": float(ci.high)}
        return out

    def blocks(self) -> list[Block]:
        out = super().blocks()
        if self.exact is not None:
            method = self.config.method
            out += [Heading("Against exact patching"),
                    Scatter("vs_exact", f"Pearson r = {self.pearson:.3f}, Kendall τ = {self.kendall:.3f}",
                            self.exact.effects.mean(0).flatten(), self.effects.mean(0).flatten(),
                            "exact patching effect", f"{method} estimate",
                            caption="Each point is one cell (mean over prompts).")]
        return out


@register_analysis("attribute", config=AttributeRunConfig, result=AttributeResult,
                   help="attribution patching (or IG) of every node, against exact patching",
                   run_name=lambda c: f"attribute-{c.nodes}",
                   example={"task": "ioi", "n": 2, "nodes": "heads", "n_resamples": 50})
def attribute(cfg: AttributeRunConfig, ctx: Context) -> AttributeResult:
    model = ctx.model
    task = aligned_task(model, cfg.task, cfg.n, cfg.seed)
    ctx.phase(f"{cfg.method} patching of {cfg.nodes} over {len(task)} pairs")
    result = attribution_patching(model, task.clean, task.corrupt, task.answers, task.wrong, cfg)
    vs = None if result.exact is None else {"pearson": result.pearson, "kendall": result.kendall}
    # base_metric is the corrupt (denoising) or clean (noising) metric itself; a run record
    # stores each tensor once, so it gets its own copy.
    fields = vars(result) | {"base_metric": result.base_metric.clone()}
    return AttributeResult(**fields, model_name=model.source.get("name", ""), task=cfg.task, vs_exact=vs)
