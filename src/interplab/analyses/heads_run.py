"""``interplab heads``: previous-token, duplicate-token and induction head scores with CIs, as a
run record (the worked example of docs/architecture.md: a config composed from the shared
``RunFields`` and the technique's own config, one registered function, one result type that
says how it is reported)."""

from __future__ import annotations

from dataclasses import dataclass

from interplab.analyses.heads import HeadDetectionConfig, HeadScores, detect_heads
from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Block, Heading, Heatmap, Table, ci_text
from interplab.core.config import RunFields
from interplab.core.result import Result

SHOWN = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class HeadsRunConfig(RunFields, HeadDetectionConfig):
    """Random repeated sequences scored by every head detector."""


@dataclass
class HeadsResult(HeadScores, Result):
    """Head scores with CIs, reported as one heatmap and a top-5 table per detector."""

    model_name: str = ""

    def title(self) -> str:
        return f"Attention head detectors on {self.model_name}"

    def headline(self) -> dict:
        out: dict = {}
        for name in SHOWN:
            ((layer, h, score),) = self.top(name, 1)
            out |= {f"top_{name}_head": f"L{layer}.h{h}", f"top_{name}_score": score}
        return out

    def blocks(self) -> list[Block]:
        out: list[Block] = []
        for name in SHOWN:
            ci = self.ci[name]
            n_layers, n_heads = ci.estimate.shape
            out += [Heading(f"{name} heads"),
                    Heatmap(name, f"{name} score", ci.estimate.float(), [f"L{i}" for i in range(n_layers)],
                            [f"h{i}" for i in range(n_heads)], halfwidth=((ci.high - ci.low) / 2).float(),
                            xlabel="head", value_label=f"mean {name} score",
                            caption="Mean score over sequences; right: CI half-width.", low=ci.low, high=ci.high),
                    Table(["head", "score", "95% CI"],
                          [[f"L{layer}.h{h}", s, ci_text(ci.low[layer, h], ci.high[layer, h])]
                           for layer, h, s in self.top(name, 5)])]
        return out


@register_analysis("heads", config=HeadsRunConfig, result=HeadsResult,
                   help="previous-token / duplicate / induction head scores",
                   example={"n_sequences": 4, "half_length": 4, "n_resamples": 50})
def heads(cfg: HeadsRunConfig, ctx: Context) -> HeadsResult:
    scores = detect_heads(ctx.model, cfg)
    return HeadsResult(**vars(scores), model_name=ctx.model.source.get("name", ""))
