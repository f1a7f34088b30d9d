"""``interplab bench``: every method scored against models and data whose mechanism is known,
written as a leaderboard (method × model: score with a CI, the null control, forward/backward
passes, wall time) in a run record with an HTML report.

Suites (``--quick`` runs CPU-sized versions of each in minutes): planted, tracr, features and
probes (``bench_suites``), circuits and trained (``bench_circuits``). Each score comes with a 95%
percentile-bootstrap CI over the units that were sampled (seeds or prompts) and, where one
exists, a null: the same method on a model or data set without the mechanism.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from interplab.core.analysis import Context, register_analysis
from interplab.core.blocks import Bars, Block, Graph, Heading, Table, Text
from interplab.core.config import RecordFields, param
from interplab.core.errors import ConfigError, choices
from interplab.core.result import Result
from interplab.groundtruth.bench_suites import Row

SUITES = ("planted", "tracr", "circuits", "trained", "features", "probes", "gnn")


def _suite(name: str):
    """The function that scores suite ``name``: (quick, n_seeds) -> rows."""
    from interplab.groundtruth import bench_circuits, bench_suites, gnn_bench

    return {"planted": bench_suites.planted_rows, "tracr": bench_suites.tracr_rows,
            "circuits": bench_circuits.circuit_rows, "trained": bench_circuits.trained_rows,
            "features": bench_suites.features_rows, "probes": bench_suites.probes_rows,
            "gnn": gnn_bench.gnn_rows}[name]


@dataclass(frozen=True)
class BenchConfig:
    """Which suites to run and how large."""

    quick: bool = param(False, help="CPU-sized versions of every suite (minutes).")
    suites: tuple[str, ...] = param(SUITES, help=f"Suites to run: {', '.join(SUITES)}.", alias="suite")
    seeds: int = param(0, help="Seeds per score (CI over seeds); 0 means 3 with --quick, 5 otherwise.", ge=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "suites", tuple(self.suites))
        bad = [s for s in self.suites if s not in SUITES]
        if bad or not self.suites:
            raise ConfigError(f"Unknown suites {bad}; choose from {choices(SUITES)}." if bad
                              else f"No suites chosen; choose from {choices(SUITES)}.")

    @property
    def n_seeds(self) -> int:
        return self.seeds or (3 if self.quick else 5)


@dataclass(frozen=True)
class BenchRunConfig(RecordFields, BenchConfig):
    """Methods scored against models and data whose mechanism is known (no model to load)."""


@dataclass
class BenchResult(Result):
    """The leaderboard: one row per (suite, model / data, method)."""

    leaderboard: list[Row]
    quick: bool = False
    n_seeds: int = 0

    def title(self) -> str:
        return "interplab bench: methods scored against known mechanisms"

    def headline(self) -> dict:
        out: dict = {"rows": len(self.leaderboard)}
        for r in self.leaderboard:
            if not math.isfinite(r.score):
                continue  # a suite that could not run (its note says why)
            key = f"{r.suite} · {r.model.split(' (')[0]} · {r.method}"
            while key in out:
                key += "'"
            out[key] = r.score
        return out

    def blocks(self) -> list[Block]:
        shown = [r for r in self.leaderboard if math.isfinite(r.score)]
        return [
            Text(f"{'Quick (CPU-sized)' if self.quick else 'Full'} run; {self.n_seeds} seeds where a CI is over "
                 "seeds. Scores with 95% percentile-bootstrap CIs; the null is the same method on a model or "
                 "data without the mechanism."),
            Table(["suite", "model / data", "method", "metric", "score [95% CI]", "null", "passes", "s", "note"],
                  [[r.suite, r.model, r.method, r.metric, r.score_text(),
                    None if r.null is None else round(r.null, 4), r.passes, round(r.seconds, 2), r.note]
                   for r in self.leaderboard]),
            Bars("leaderboard", "Scores against the known mechanism", [f"{r.method} — {r.model}" for r in shown],
                 [r.score for r in shown], "score (each row's own metric, see the table)",
                 low=[r.score if r.low is None else r.low for r in shown],
                 high=[r.score if r.high is None else r.high for r in shown],
                 null=[r.null for r in shown],
                 caption="Each method's score with its 95% CI (where there is one); crosses: the null."),
            *self.circuit_blocks(),
        ]

    def circuit_blocks(self) -> list[Block]:
        """One graph per row that kept its edge scores (``extra["circuit"]``, a
        ``bench_circuits.CircuitEdges``): the planted model's nodes by layer, every scored edge
        with its CI and whether the planted circuit has it; edges under the row's cut hidden."""
        from interplab.groundtruth.bench_circuits import CircuitEdges

        rows = [r for r in self.leaderboard if isinstance(r.extra.get("circuit"), CircuitEdges)]
        if not rows:
            return []
        out: list[Block] = [Heading("Circuits found against the planted ones")]
        for k, r in enumerate(rows):
            c: CircuitEdges = r.extra["circuit"]
            index = {name: i for i, name in enumerate(c.nodes)}
            top = max((abs(v) for v in c.scores), default=0.0)
            cut = f" ({c.threshold / top:.3g} × the largest)" if top > 0 else ""
            out.append(Graph(
                f"circuit_{k}", f"{r.method} on {r.model}", list(c.nodes), list(c.layers),
                [index[e[0]] for e in c.edges], [index[e[1]] for e in c.edges], list(c.scores),
                low=list(c.low), high=list(c.high), truth=list(c.truth), threshold=c.threshold,
                edge_labels=[" → ".join(e) if len(e) < 3 else f"{e[0]} → {e[1]} ({e[2]})" for e in c.edges],
                score_label=f"edge score: change of {c.metric} when the edge alone is ablated",
                caption=f"{r.method} on {r.model}: each edge's mean score over prompts (95% CI); truth: the "
                        f"planted circuit's {sum(c.truth)} edges. Shown: |score| >= {c.threshold:.3g}{cut}. A "
                        "head's q, k and v inputs are separate edges."))
        return out

    def terminal(self) -> list[Block]:
        return [Table(["suite", "model / data", "method", "metric", "score [95% CI]", "null", "passes", "s"],
                      [[r.suite, r.model, r.method, r.metric, r.score_text(),
                        "" if r.null is None else f"{r.null:.3f}", r.passes, f"{r.seconds:.1f}"]
                       for r in self.leaderboard], title="interplab bench — leaderboard")]


@register_analysis("bench", config=BenchRunConfig, result=BenchResult, needs_model=False,
                   help="score methods against models with known mechanisms (leaderboard)",
                   run_name=lambda cfg: "bench-quick" if cfg.quick else "bench",
                   example={"quick": True, "suites": ("planted",), "seeds": 2})
def bench(cfg: BenchRunConfig, ctx: Context) -> BenchResult:
    rows: list[Row] = []
    for suite in cfg.suites:
        ctx.phase(f"suite {suite}")
        rows += _suite(suite)(cfg.quick, cfg.n_seeds)
    return BenchResult(rows, cfg.quick, cfg.n_seeds)
