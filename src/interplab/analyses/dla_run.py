"""``interplab dla``: direct logit attribution (``analyses.dla``) of answer − wrong on a task's
clean prompts, per layer (embed, attention, MLP) and per head, with bootstrap CIs over prompts,
as a run record. The components sum to the model's own logit difference; the gap is reported."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from interplab.analyses.dla import DLAConfig, DLAResult, direct_logit_attribution
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heading, Heatmap, Lines, Table, Text, ci_text
from interplab.core.config import RunFields, TaskFields, param
from interplab.core.result import Result
from interplab.tasks.aligned import aligned_task


@dataclass(frozen=True)
class DLARunConfig(RunFields, TaskFields, DLAConfig):
    """Direct logit attribution per layer and head on a task's clean prompts (answer − wrong)."""

    neurons: bool = param(False, help="Also split MLPs into neurons (mlp.hidden times down-projection columns).")

    def dla(self) -> DLAConfig:
        names = {f.name for f in dataclasses.fields(DLAConfig)}
        return DLAConfig(**{k: v for k, v in vars(self).items() if k in names})


@dataclass
class DLARunResult(DLAResult, Result):
    """Per-prompt direct contributions, reported as per-layer lines and a per-head heatmap."""

    task: str = ""
    model_name: str = ""

    def title(self) -> str:
        return f"Direct logit attribution ({self.task}) on {self.model_name}"

    @property
    def gap(self) -> float:
        return float((self.total - self.logit_diff).abs().max())

    def top_heads(self, k: int) -> list[tuple[int, int, float]]:
        """(layer, head, mean contribution) of the ``k`` heads of largest |mean|."""
        if self.heads is None:
            return []
        mean = self.heads.mean(0)
        order = mean.flatten().abs().argsort(descending=True)[:k].tolist()
        return [(*divmod(flat, mean.shape[1]), float(mean.flatten()[flat])) for flat in order]

    def headline(self) -> dict:
        attn, mlp = self.attn.mean(0), self.mlp.mean(0)
        parts = {f"L{i}.attn": float(v) for i, v in enumerate(attn)} | {f"L{i}.mlp": float(v) for i, v in enumerate(mlp)}
        top = max(parts, key=lambda k: abs(parts[k]))
        out = {"logit_diff": float(self.logit_diff.mean()), "embed": float(self.embed.mean()),
               "top_component": top, "top_component_contribution": parts[top]}
        for layer, h, s in self.top_heads(1):
            out |= {"top_head": f"L{layer}.h{h}", "top_head_contribution": s}
        return out | {"max_sum_gap": self.gap}

    def _head_rows(self, k: int) -> list[list]:
        ci = self.summary.get("heads")
        return [[f"L{layer}.h{h}", s, "" if ci is None else ci_text(ci.low[layer, h], ci.high[layer, h])]
                for layer, h, s in self.top_heads(k)]

    def terminal(self) -> list[Block]:
        out = super().terminal()
        if self.heads is not None:
            out.append(Table(["head", "mean contribution", "95% CI"], self._head_rows(10), "Top heads"))
        return out

    def blocks(self) -> list[Block]:
        n_layers = self.attn.shape[1]
        layers = list(range(n_layers))
        series = {"attention": self.attn.mean(0).tolist(), "MLP": self.mlp.mean(0).tolist()}
        low = {k: self.summary[s].low.tolist() for k, s in (("attention", "attn"), ("MLP", "mlp")) if s in self.summary}
        high = {k: self.summary[s].high.tolist() for k, s in (("attention", "attn"), ("MLP", "mlp")) if s in self.summary}
        out: list[Block] = [
            Text("Each component's direct contribution to logit(answer) − logit(wrong) at the last "
                 "position, through the final norm frozen at its value on the actual residual; the "
                 f"components sum to the model's logit difference (max gap {self.gap:.2e}). "
                 f"{self.logit_diff.shape[0]} prompts; mean logit difference {float(self.logit_diff.mean()):.3f}, "
                 f"of which the embedding writes {float(self.embed.mean()):.3f} directly."),
            Heading("Layers"),
            Lines("dla_layers", "Direct logit attribution per layer", [float(x) for x in layers], series,
                  "layer", "mean direct logit contribution", low=low, high=high, hline=0.0,
                  caption="Mean over prompts (logit units), with 95% bootstrap CIs."),
        ]
        if self.heads is not None:
            ci = self.summary.get("heads")
            mean = self.heads.mean(0).float()
            out += [Heading("Heads"),
                    Heatmap("dla_heads", "Direct logit attribution per head", mean,
                            [f"L{i}" for i in range(mean.shape[0])], [f"h{i}" for i in range(mean.shape[1])],
                            halfwidth=None if ci is None else ((ci.high - ci.low) / 2).float(), xlabel="head",
                            value_label="mean direct logit contribution",
                            caption="Mean over prompts (logit units); right: CI half-width.",
                            low=None if ci is None else ci.low, high=None if ci is None else ci.high),
                    Table(["head", "mean contribution", "95% CI"], self._head_rows(10))]
        return out


@register_analysis("dla", config=DLARunConfig, result=DLARunResult,
                   help="direct logit attribution per layer and head",
                   run_name=lambda cfg: f"dla-{cfg.task}", example={"n": 2, "n_resamples": 50})
def dla(cfg: DLARunConfig, ctx: Context) -> DLARunResult:
    task = aligned_task(ctx.model, cfg.task, cfg.n, cfg.seed)
    ctx.phase(f"attributing {len(task)} prompts")
    res = direct_logit_attribution(ctx.model, task.clean, task.answers, task.wrong, cfg.dla())
    return DLARunResult(**{f.name: getattr(res, f.name) for f in dataclasses.fields(res)}, task=cfg.task,
                        model_name=ctx.model.source.get("name", ""))
