"""ACDC: automatic circuit discovery by greedy edge pruning.

Technique (Conmy et al. 2023, "Towards Automated Circuit Discovery for Mechanistic
Interpretability", Algorithm 1). Start from the full graph. Visit the receivers from the logits
backwards (reverse forward order); for each of a receiver's incoming edges (latest sender
first) ablate it *in addition to* the edges already removed and measure the metric on all
prompts; if it moved by less than the threshold tau, keep it removed, else restore it.

* metric ``kl`` (ACDC's default): mean KL(clean || current); an edge is removed when
  ``KL(with it removed) - KL(current) < tau`` (removing one that *lowers* KL is removed too);
* a task metric (``logit_diff``, ``prob``, ``loss``): removed when ``|M(new) - M(current)| < tau``.

A node all of whose outgoing edges are removed reaches nothing, so its incoming edges are
removed without a forward (exactly: its output is read by no receiver). Under grouped-query
attention a k / v receiver feeds every query head of its KV group, so it is skipped only when
all of them reach nothing (``CircuitGraph.reader_nodes``). Deterministic: the
visiting order is fixed and no randomness is drawn. Cost: one forward on all prompts per edge
tested, plus one for the full graph; reported as ``n_forward``.

Assumptions: the result depends on tau, on the ablation and on the visiting order (greedy,
not a global optimum); the edges are scored on the prompts given, so use enough of them.
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
from interplab.core.errors import ConfigError
from interplab.core.model import Model


@dataclass(frozen=True)
class ACDCConfig:
    """Threshold, metric and ablation of an ACDC run."""

    threshold: float = param(0.01, help="tau: an edge whose removal moves the metric by less is pruned.")
    metric: str = param("kl", help="kl (to the clean output), logit_diff, prob or loss.")
    ablation: str = param("corrupt", help="corrupt, mean or zero: what a removed edge carries.")

    def __post_init__(self) -> None:
        check_metric(self.metric)
        check_ablation(self.ablation)
        if not self.threshold >= 0:
            raise ConfigError(f"threshold (tau) must be >= 0; got {self.threshold}.")


@dataclass
class ACDCResult:
    """The edges ACDC kept, and what the run cost."""

    config: ACDCConfig
    edges: tuple[tuple[str, ...], ...]  # every edge of the graph
    kept: torch.Tensor  # bool [n_edges]
    metric_full: float  # metric with nothing removed
    metric_circuit: float  # metric of the kept circuit (everything else ablated)
    n_forward: int
    n_tested: int  # edges that needed a forward (the rest were unreachable)
    seconds: float

    @property
    def circuit(self) -> list[tuple[str, ...]]:
        return [e for e, k in zip(self.edges, self.kept.tolist()) if k]


def acdc(model: Model, task: CircuitTask, config: ACDCConfig = ACDCConfig(),
         graph: CircuitGraph | None = None) -> ACDCResult:
    start = time.perf_counter()
    check_task(model, task, config.metric, config.ablation)
    graph = graph or CircuitGraph.from_model(model)
    patcher = EdgePatcher(model, graph, task, config.ablation)
    scorer = Scorer(config.metric, task, patcher.clean_logits[:, -1])
    everyone = torch.arange(task.n_prompts)

    def measure(removed: torch.Tensor) -> float:
        with torch.no_grad():
            logits = patcher.run(everyone, removed[None].expand(task.n_prompts, -1))
        return float(scorer(logits[:, -1], everyone).float().mean())

    removed = torch.zeros(graph.n_edges, dtype=torch.bool)
    full = current = measure(removed)
    senders_of = [e[0] for e in graph.edges]
    tested = 0
    for r in reversed(graph.receivers):
        block = range(r.start, r.start + r.n_senders)
        if r.node != "logits":
            readers = set(graph.reader_nodes(r))
            out = [i for i, s in enumerate(senders_of) if s in readers]
            if bool(removed[out].all()):
                removed[list(block)] = True
                continue
        for i in reversed(block):
            removed[i] = True
            new = measure(removed)
            tested += 1
            change = new - current if config.metric == "kl" else abs(new - current)
            if change < config.threshold:
                current = new
            else:
                removed[i] = False
    return ACDCResult(config, graph.edges, ~removed, full, current, patcher.n_forward, tested,
                      time.perf_counter() - start)
