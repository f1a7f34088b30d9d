"""Exact edge patching: the effect of ablating each edge alone -- the reference scores.

Technique. For every edge e = (s -> r[.input]) of the graph and every clean prompt, run the
model with only that edge ablated (``edges.EdgePatcher``) and record
``metric(patched) - metric(clean)``. This is the quantity EAP and EAP-IG approximate
(Syed et al. 2023, "Attribution Patching Outperforms Automated Circuit Discovery"; Hanna et al.
2024, "Have Faith in Faithfulness") and the single-edge step ACDC takes (Conmy et al. 2023).
Cost: one forward row per (edge, prompt), batched ``max_rows`` rows per forward.

Assumptions: the prompts are unpadded and the metric is read at the last position; the
ablation (corrupt / mean / zero) defines what "removing" an edge means, and the scores mean
nothing without it, so it travels with the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from interplab.analyses.circuits.edges import (
    CircuitTask,
    EdgePatcher,
    Scorer,
    check_ablation,
    check_task,
)
from interplab.analyses.circuits.graph import CircuitGraph
from interplab.analyses.metrics import check_metric
from interplab.core.config import param
from interplab.core.errors import ConfigError, choices
from interplab.core.model import Model

ORDERINGS = ("absolute", "signed")


def check_ordering(name: str) -> None:
    if name not in ORDERINGS:
        raise ConfigError(f"Unknown edge ordering {name!r}. Valid: {choices(ORDERINGS)}.")


@dataclass(frozen=True)
class ExactConfig:
    """Exact edge patching of every edge of the graph."""

    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl (at the last position).")
    ablation: str = param("corrupt", help="corrupt, mean or zero: what an ablated edge carries.")
    max_rows: int = param(512, help="Most (edge, prompt) rows per forward.")

    def __post_init__(self) -> None:
        check_metric(self.metric)
        check_ablation(self.ablation)
        if self.max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1; got {self.max_rows}.")


@dataclass
class EdgeScores:
    """One score per edge: the (estimated) change of the metric when that edge is ablated."""

    method: str  # "exact", "eap" or "eap-ig"
    edges: tuple[tuple[str, ...], ...]
    scores: torch.Tensor  # [n_edges], mean over prompts
    per_prompt: torch.Tensor  # [n_prompts, n_edges]
    metric: str
    ablation: str
    higher_is_better: bool  # of the metric: a larger value is closer to clean
    n_forward: int  # whole-model forward passes
    n_backward: int  # whole-model backward passes
    seconds: float
    config: object = None

    def importance(self, ordering: str = "absolute", scores: torch.Tensor | None = None) -> torch.Tensor:
        """How much each edge matters under ``ordering``: ``absolute`` = |score|; ``signed`` =
        how far ablating it moves the metric *away* from clean (-score for logit_diff / prob,
        +score for loss / kl), so edges that help the task rank first and edges whose ablation
        helps rank last."""
        check_ordering(ordering)
        s = self.scores if scores is None else scores
        if ordering == "absolute":
            return s.abs()
        return -s if self.higher_is_better else s

    def order(self, ordering: str = "absolute") -> torch.Tensor:
        """Edge indices, most important first (ties broken by graph order: deterministic)."""
        return torch.sort(self.importance(ordering), descending=True, stable=True).indices

    def top(self, k: int, ordering: str = "absolute") -> list[tuple[str, ...]]:
        return [self.edges[i] for i in self.order(ordering)[:k].tolist()]


def exact_edge_patching(model: Model, task: CircuitTask, config: ExactConfig = ExactConfig(),
                        graph: CircuitGraph | None = None) -> EdgeScores:
    """The effect of each edge alone: metric(only that edge ablated) - metric(clean)."""
    start = time.perf_counter()
    check_task(model, task, config.metric, config.ablation)
    graph = graph or CircuitGraph.from_model(model)
    patcher = EdgePatcher(model, graph, task, config.ablation)
    n, n_e = task.n_prompts, graph.n_edges
    scorer = Scorer(config.metric, task, patcher.clean_logits[:, -1])
    everyone = torch.arange(n)
    base = scorer(patcher.clean_logits[:, -1], everyone).float()
    per_prompt = torch.empty(n, n_e)
    pairs = torch.cartesian_prod(torch.arange(n_e), everyone)  # [(edge, prompt)]
    with torch.no_grad():
        for lo in range(0, len(pairs), config.max_rows):
            chunk = pairs[lo : lo + config.max_rows]
            edge, prompt = chunk[:, 0], chunk[:, 1]
            removed = torch.zeros(len(chunk), n_e, dtype=torch.bool)
            removed[torch.arange(len(chunk)), edge] = True
            logits = patcher.run(prompt, removed)
            per_prompt[prompt, edge] = scorer(logits[:, -1], prompt).float() - base[prompt]
    return EdgeScores("exact", graph.edges, per_prompt.mean(0), per_prompt, config.metric,
                      config.ablation, scorer.higher_is_better, patcher.n_forward, 0,
                      time.perf_counter() - start, config)
