"""Faithfulness of circuits of growing size, and edge / node AUROC against a known truth.

Technique. A method's scores order the edges; the circuit of size k keeps the top k and
ablates every other edge (the ACDC / EAP convention), all in one forward per batch of rows.
Its faithfulness is the share of the full model's behaviour it recovers (Hanna et al. 2024,
"Have Faith in Faithfulness", §3; Marks et al. 2024, "Sparse Feature Circuits"):

    recovered(k) = (M(circuit_k) - M(empty)) / (M(full) - M(empty))

with M the mean metric over prompts, ``empty`` every edge ablated, ``full`` none. Sizes form a
log grid 1, 2, 4, ... and the full edge count. The result names the ordering (``absolute``:
by |score|; ``signed``: by how far ablating the edge moves the metric away from clean, see
``EdgeScores.importance``) and the ablation, since both change the curve.

AUROC against a truth (sets of names, e.g. a ``groundtruth.truth.Truth``'s edges / nodes): the
exact Mann-Whitney statistic with ties counted one half (``stats.auroc``; ``nan`` when the
truth leaves one class empty). A node's score
is the largest importance of an edge into or out of it; ``embed`` and ``logits`` are in every
circuit and left out of the node AUROC. Under grouped-query attention a KV head's k / v edges
are named after the first query head of its group (``graph.py``), so they count towards that
head's node score. ``auroc_ci_over_prompts`` is a percentile bootstrap
over prompts (the units that were sampled), recomputing the mean scores per resample.
"""

from __future__ import annotations

import math
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
from interplab.analyses.circuits.exact import EdgeScores, check_ordering
from interplab.analyses.circuits.graph import CircuitGraph
from interplab.analyses.metrics import check_metric
from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError
from interplab.core.model import Model
from interplab.stats.auroc import auroc as stats_auroc


@dataclass(frozen=True)
class FaithfulnessConfig:
    """How to cut circuits from a method's scores and how to ablate the rest."""

    ordering: str = param("absolute", help="absolute (|score|) or signed (helps the task first).")
    ablation: str = param("corrupt", help="corrupt, mean or zero: what an ablated edge carries.")
    metric: str = param("logit_diff", help="logit_diff, prob, loss or kl.")
    sizes: tuple[int, ...] | None = param(None, help="Circuit sizes (default: 1, 2, 4, ..., n_edges).")
    max_rows: int = param(512, help="Most (size, prompt) rows per forward.")

    def __post_init__(self) -> None:
        check_ordering(self.ordering)
        check_ablation(self.ablation)
        check_metric(self.metric)
        if self.sizes is not None:
            object.__setattr__(self, "sizes", tuple(int(s) for s in self.sizes))
            if not self.sizes or min(self.sizes) < 0:
                raise ConfigError(f"sizes must be non-empty counts >= 0; got {self.sizes}.")
        if self.max_rows < 1:
            raise ConfigError(f"max_rows must be >= 1; got {self.max_rows}.")


@dataclass
class FaithfulnessResult:
    """Metric recovered by the top-k circuits of one method's ordering."""

    config: FaithfulnessConfig
    method: str
    ordering: str
    ablation: str
    sizes: tuple[int, ...]
    recovered: torch.Tensor  # [n_sizes]
    metric: torch.Tensor  # [n_sizes] mean metric of each circuit
    metric_full: float
    metric_empty: float
    n_forward: int
    seconds: float


def log_sizes(n_edges: int) -> tuple[int, ...]:
    sizes = [2**i for i in range(int(math.log2(max(n_edges, 1))) + 1)]
    return tuple(dict.fromkeys([*sizes, n_edges]))


def faithfulness(model: Model, task: CircuitTask, scores: EdgeScores,
                 config: FaithfulnessConfig = FaithfulnessConfig(),
                 graph: CircuitGraph | None = None) -> FaithfulnessResult:
    start = time.perf_counter()
    check_task(model, task, config.metric, config.ablation)
    graph = graph or CircuitGraph.from_model(model)
    if tuple(scores.edges) != graph.edges:
        raise InputError("The scores were computed on another graph (their edges differ from "
                         "this model's); score and evaluate on the same model.")
    sizes = config.sizes or log_sizes(graph.n_edges)
    if max(sizes) > graph.n_edges:
        raise ConfigError(f"Circuit sizes {sizes} exceed the graph's {graph.n_edges} edges.")
    patcher = EdgePatcher(model, graph, task, config.ablation)
    scorer = Scorer(config.metric, task, patcher.clean_logits[:, -1])
    order = scores.order(config.ordering)
    n = task.n_prompts
    cuts = [graph.n_edges, 0, *sizes]  # kept edges: full, empty, then each size
    values = torch.empty(len(cuts), n)
    pairs = torch.cartesian_prod(torch.arange(len(cuts)), torch.arange(n))
    with torch.no_grad():
        for lo in range(0, len(pairs), config.max_rows):
            chunk = pairs[lo : lo + config.max_rows]
            removed = torch.ones(len(chunk), graph.n_edges, dtype=torch.bool)
            for row, c in enumerate(chunk[:, 0].tolist()):
                removed[row, order[: cuts[c]]] = False
            logits = patcher.run(chunk[:, 1], removed)
            values[chunk[:, 0], chunk[:, 1]] = scorer(logits[:, -1], chunk[:, 1]).float()
    means = values.mean(1)
    full, empty = float(means[0]), float(means[1])
    if abs(full - empty) < 1e-8:
        raise ConfigError(f"The full and the empty circuit give the same mean {config.metric} "
                          f"({full:.4g}); there is nothing to recover under the "
                          f"{config.ablation!r} ablation. Check the corruption.")
    recovered = (means[2:] - empty) / (full - empty)
    return FaithfulnessResult(config, scores.method, config.ordering, config.ablation,
                              tuple(sizes), recovered, means[2:], full, empty,
                              patcher.n_forward, time.perf_counter() - start)


# -- against a truth ----------------------------------------------------------------------------
def edge_labels(scores: EdgeScores, truth_edges) -> torch.Tensor:
    wanted = {tuple(e) for e in truth_edges}
    unknown = wanted - set(scores.edges)
    if unknown:
        raise InputError(f"Truth edges {sorted(unknown)} are not in the graph; edges look like "
                         f"{scores.edges[0]!r}. Is the truth for this model?")
    return torch.tensor([e in wanted for e in scores.edges])


def _auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """``stats.auroc``, ``nan`` when one class is empty (e.g. a truth of only embed / logits)."""
    return stats_auroc(scores, labels, nan_if_one_class=True)


def edge_auroc(scores: EdgeScores, truth_edges, ordering: str = "absolute") -> float:
    """AUROC of the edge importances for separating truth edges from the rest."""
    return _auroc(scores.importance(ordering), edge_labels(scores, truth_edges))


def node_scores(scores: EdgeScores, ordering: str = "absolute",
                values: torch.Tensor | None = None) -> dict[str, float]:
    """Each head / MLP node's largest edge importance (into or out of it)."""
    imp = scores.importance(ordering, values)
    out: dict[str, float] = {}
    for e, v in zip(scores.edges, imp.tolist()):
        for node in e[:2]:
            if node not in ("embed", "logits"):
                out[node] = max(out.get(node, -math.inf), v)
    return out


def node_auroc(scores: EdgeScores, truth_nodes, ordering: str = "absolute") -> float:
    """AUROC of node scores for separating the truth's heads / MLPs from the others."""
    per = node_scores(scores, ordering)
    wanted = set(truth_nodes) - {"embed", "logits"}
    unknown = wanted - set(per)
    if unknown:
        raise InputError(f"Truth nodes {sorted(unknown)} are not in the graph.")
    names = sorted(per)
    return _auroc(torch.tensor([per[n] for n in names]), torch.tensor([n in wanted for n in names]))


def auroc_ci_over_prompts(scores: EdgeScores, truth_edges, ordering: str = "absolute",
                          n_resamples: int = 1000, confidence: float = 0.95,
                          seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): percentile bootstrap of the edge AUROC over prompts."""
    labels = edge_labels(scores, truth_edges)
    per = scores.per_prompt
    g = torch.Generator().manual_seed(seed)
    reps = []
    for _ in range(n_resamples):
        idx = torch.randint(per.shape[0], (per.shape[0],), generator=g)
        reps.append(_auroc(scores.importance(ordering, per[idx].mean(0)), labels))
    reps_t = torch.tensor(reps, dtype=torch.float64)
    alpha = (1 - confidence) / 2
    lo, hi = torch.quantile(reps_t, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return _auroc(scores.importance(ordering), labels), float(lo), float(hi)
