"""Explanation methods for GNN predictions, each giving one score per node and per edge of the
explained graph, to be scored against the planted motifs (``gnn_bench``).

interplab's own, through ``runtime.generic.HookedModule`` (node sites: the first layer's input
features and every layer's output embeddings; edge sites: every layer's messages):

* ``patch`` — exact activation patching: a node is zero-ablated at every node site (its
  features and each layer's embedding), an edge's message is zero-ablated at every layer; the
  score is the drop of the explained logit. One node or edge per copy of the graph, many copies
  in one batched forward (a graph item of the batch each: the generic runtime addresses rows
  per item, so the copies do not mix);
* ``attribute`` — attribution patching (first-order: ∑ gradient × (0 − activation) over the same
  sites), one forward and one backward;
* ``ig`` — integrated gradients of the same quantity along the straight path from the ablated
  (all-zero) sites to the clean ones, ``steps`` points (Riemann midpoints): the node features are
  scaled for the nodes, every layer's messages for the edges.

The field's, through torch_geometric's ``Explainer``: gradient ``saliency`` and Captum's
``captum_ig`` (``CaptumExplainer``), ``gnnexplainer`` (Ying et al. 2019) and ``pgexplainer``
(Luo et al. 2020; edges only, trained on the training split's instances first).

Every method explains the model's own prediction (its argmax class) through that class's logit.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from interplab.core.errors import ConfigError, choices
from interplab.runtime.generic import HookedModule, SiteSpec

METHODS = ("patch", "attribute", "ig", "saliency", "captum_ig", "gnnexplainer", "pgexplainer")
OURS = ("patch", "attribute", "ig")


@dataclass
class Scores:
    """One explanation: a score per node and per edge (None where the method gives none), and
    the passes it took."""

    nodes: torch.Tensor | None
    edges: torch.Tensor | None
    forward: int = 0
    backward: int = 0


@dataclass
class Target:
    """What is explained: node ``node`` of ``data`` (node task) or the whole graph, class ``cls``."""

    data: object  # torch_geometric Data
    node: int | None
    cls: int


def sites_of(model: nn.Module) -> dict[str, SiteSpec]:
    """x (the first conv's input features), h<l> (layer l's embeddings after its activation) and
    msg<l> (layer l's messages) of a ``gnn_models`` GCN / GIN."""
    n = len(model.convs)
    sites = {"x": SiteSpec("convs.0", tensor="input[0]", layout="nodes")}
    sites.update({f"h{i}": SiteSpec(f"acts.{i}", layout="nodes") for i in range(n)})
    sites.update({f"msg{i}": SiteSpec(f"convs.{i}", tensor="message", layout="edges") for i in range(n)})
    return sites


def node_sites(hm: HookedModule) -> list[str]:
    return [n for n in hm.sites if not n.startswith("msg")]


def edge_sites(hm: HookedModule) -> list[str]:
    return [n for n in hm.sites if n.startswith("msg")]


def _forward(model, data, batch: torch.Tensor | None = None, **kw):
    """The model on ``data`` (or a Batch), node task (GCN: x, edge_index) or graph task (GIN: + batch)."""
    if getattr(model, "pool", None) is not None:
        return model(data.x, data.edge_index, data.batch if batch is None else batch, **kw)
    return model(data.x, data.edge_index, **kw)


def logit_fn(model, target: Target) -> Callable[[torch.Tensor], torch.Tensor]:
    """The explained logit from the model's output on ``target.data`` alone."""
    if target.node is None:
        return lambda out: out[0, target.cls]
    return lambda out: out[target.node, target.cls]


def predicted(model, data, node: int | None) -> int:
    with torch.no_grad():
        out = _forward(model, data, torch.zeros(data.num_nodes, dtype=torch.long))
    return int(out[0 if node is None else node].argmax())


# -- interplab's methods -----------------------------------------------------------------------------
def patch(hm: HookedModule, target: Target, chunk: int = 64) -> Scores:
    """Exact zero-ablation of each candidate node (at every node site) and edge (its message at
    every layer), ``chunk`` copies of the graph per forward, one ablation in each; score = clean
    logit − ablated logit. Candidates: ``computation_graph`` (nothing outside it can move the
    explained logit, so its score is 0 without a forward)."""
    from torch_geometric.data import Batch

    data, model = target.data, hm.module
    node_ids, edge_ids = computation_graph(target, len(model.convs))
    clean = float(logit_fn(model, target)(_run(hm, Batch.from_data_list([data]), [])))
    forwards = 0

    def sweep(n: int, ids: list[int], sites: list[str]) -> torch.Tensor:
        nonlocal forwards
        out = torch.zeros(n, dtype=torch.float64)
        for lo in range(0, len(ids), chunk):
            idx = ids[lo: lo + chunk]
            batch = Batch.from_data_list([data] * len(idx))
            logits = _run(hm, batch, [_AblateEach(s, tuple(idx)) for s in sites])
            forwards += 1
            for k, j in enumerate(idx):
                out[j] = clean - float(_item_logit(logits, batch, k, target))
        return out

    nodes = sweep(data.num_nodes, node_ids, node_sites(hm))
    edges = sweep(data.edge_index.shape[1], edge_ids, edge_sites(hm))
    return Scores(nodes, edges, forward=forwards + 1)


@dataclass(frozen=True, eq=False)
class _AblateEach:
    """Zero local row ``local[k]`` of item k, for every k at once (one write); a generic-runtime
    intervention (any object with ``site`` and ``__call__(act, rows)``)."""

    site: str
    local: tuple[int, ...]

    def __call__(self, act: torch.Tensor, rows) -> torch.Tensor:
        idx = torch.stack([rows.item_rows(k)[j] for k, j in enumerate(self.local)])
        new = act.clone()
        new[idx] = 0
        return new


def computation_graph(target: Target, layers: int) -> tuple[list[int], list[int]]:
    """(nodes, edges) that can reach the explained output: for a node, its ``layers``-hop
    neighbourhood and the edges among it towards the node (torch_geometric's ``k_hop_subgraph``);
    for a graph, all of them."""
    data = target.data
    if target.node is None:
        return list(range(data.num_nodes)), list(range(data.edge_index.shape[1]))
    from torch_geometric.utils import k_hop_subgraph

    subset, _, _, edge_mask = k_hop_subgraph(target.node, layers, data.edge_index, num_nodes=data.num_nodes)
    return subset.tolist(), edge_mask.nonzero().flatten().tolist()


def _run(hm: HookedModule, batch, interventions: list) -> torch.Tensor:
    with torch.no_grad():
        if getattr(hm.module, "pool", None) is not None:
            return hm.run(batch.x, batch.edge_index, batch=batch.batch, interventions=interventions)
        return hm.run(batch.x, batch.edge_index, interventions=interventions, segments={"nodes": batch.batch})


def _item_logit(logits: torch.Tensor, batch, k: int, target: Target) -> torch.Tensor:
    if target.node is None:
        return logits[k, target.cls]
    return logits[int(batch.ptr[k]) + target.node, target.cls]


def _row_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1).double()


def attribute(hm: HookedModule, target: Target) -> Scores:
    """First-order estimate of ``patch``: ∑ gradient · activation over the same sites (clean
    minus the all-zero ablation, to first order); message sites' rows past the graph's edges
    (GCN's added self-loops) are left out."""
    data = target.data
    metric = logit_fn(hm.module, target)
    _, grads = _gradients(hm, data, metric, list(hm.sites))
    nodes = sum(_row_sum(a * g) for n, (a, g) in grads.items() if not n.startswith("msg"))
    n_edges = data.edge_index.shape[1]
    edges = sum(_row_sum(a * g)[:n_edges] for n, (a, g) in grads.items() if n.startswith("msg"))
    return Scores(nodes, edges, forward=1, backward=1)


def _gradients(hm: HookedModule, data, metric, sites, interventions=()):
    if getattr(hm.module, "pool", None) is not None:
        batch = torch.zeros(data.num_nodes, dtype=torch.long)
        return hm.gradients(metric, data.x, data.edge_index, batch=batch, sites=sites, interventions=interventions)
    return hm.gradients(metric, data.x, data.edge_index, sites=sites, interventions=interventions)


@dataclass(frozen=True, eq=False)
class _Scale:
    """Multiply a site's rows by ``alpha`` (the IG path); a generic-runtime intervention."""

    site: str
    alpha: float

    def __call__(self, act: torch.Tensor, rows) -> torch.Tensor:
        return act * self.alpha


def ig(hm: HookedModule, target: Target, steps: int = 16) -> Scores:
    """Integrated gradients from the all-zero sites to the clean ones: the node features scaled
    by α for the nodes (∑ over features of x · mean gradient), every layer's messages scaled by
    α for the edges (∑ over layers and features of message · mean gradient at that layer)."""
    data = target.data
    metric = logit_fn(hm.module, target)
    n_edges = data.edge_index.shape[1]
    nodes = torch.zeros(data.num_nodes, dtype=torch.float64)
    edges = torch.zeros(n_edges, dtype=torch.float64)
    msgs = edge_sites(hm)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        _, g = _gradients(hm, data, metric, ["x"], [_Scale("x", alpha)])
        act, grad = g["x"]  # the site's value is α·x; x · grad = act / α · grad
        nodes += _row_sum(act * grad) / alpha / steps
        _, g = _gradients(hm, data, metric, msgs, [_Scale(m, alpha) for m in msgs])
        for m in msgs:
            act, grad = g[m]
            edges += _row_sum(act * grad)[:n_edges] / alpha / steps
    return Scores(nodes, edges, forward=2 * steps, backward=2 * steps)


# -- torch_geometric's explainers ---------------------------------------------------------------------
@dataclass
class PygSetup:
    """An ``Explainer`` per method, built once per model (PGExplainer trained here)."""

    model: nn.Module
    task: str  # "node" | "graph"
    explainers: dict = field(default_factory=dict)


def _explainer(model, task: str, method: str, epochs: int):
    from torch_geometric.explain import Explainer
    from torch_geometric.explain.algorithm import CaptumExplainer, GNNExplainer, PGExplainer

    level = "node" if task == "node" else "graph"
    config = {"mode": "multiclass_classification", "task_level": level, "return_type": "raw"}
    if method == "pgexplainer":
        return Explainer(_GraphCall(model, task), PGExplainer(epochs=epochs, lr=0.003), "phenomenon", config,
                         edge_mask_type="object")
    algorithm = {"saliency": lambda: CaptumExplainer("Saliency"),
                 "captum_ig": lambda: CaptumExplainer("IntegratedGradients"),
                 "gnnexplainer": lambda: GNNExplainer(epochs=epochs)}[method]()
    return Explainer(_GraphCall(model, task), algorithm, "model", config, node_mask_type="attributes",
                     edge_mask_type="object")


class _GraphCall(nn.Module):
    """The model with the call signature torch_geometric's explainers use: (x, edge_index, **kw)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x, edge_index, **kw):
        if self.task == "graph":
            return self.model(x, edge_index, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
        return self.model(x, edge_index)


def train_pgexplainer(setup: PygSetup, targets: list[Target], epochs: int) -> int:
    """Fit PGExplainer's edge-mask network on ``targets`` (a training split); the passes it took."""
    explainer = setup.explainers.setdefault("pgexplainer", _explainer(setup.model, setup.task, "pgexplainer", epochs))
    passes = 0
    with _quiet():
        for epoch in range(epochs):
            for t in targets:
                index = None if t.node is None else t.node
                explainer.algorithm.train(epoch, explainer.model, t.data.x, t.data.edge_index,
                                          target=torch.tensor([t.cls]) if t.node is None else _node_target(t),
                                          index=index)
                passes += 1
    return passes


@contextlib.contextmanager
def _quiet():
    """The libraries' own chatter, not ours to fix: Captum sets requires_grad on the inputs it is
    given (and says so), PGExplainer converts its loss with float()."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad=True to a scalar")
        yield


def _node_target(t: Target) -> torch.Tensor:
    y = torch.zeros(t.data.num_nodes, dtype=torch.long)
    y[t.node] = t.cls
    return y


def pyg_explain(setup: PygSetup, method: str, target: Target, epochs: int) -> Scores:
    explainer = setup.explainers.get(method)
    if explainer is None:
        if method == "pgexplainer":
            raise ConfigError("PGExplainer must be trained first (train_pgexplainer).")
        explainer = setup.explainers[method] = _explainer(setup.model, setup.task, method, epochs)
    data = target.data
    kw = {"index": target.node} if target.node is not None else {}
    if method == "pgexplainer":
        kw["target"] = _node_target(target) if target.node is not None else torch.tensor([target.cls])
    with _quiet():
        explanation = explainer(data.x, data.edge_index, **kw)
    nodes = None if explanation.get("node_mask") is None else explanation.node_mask.detach().abs().sum(1).double()
    edges = None if explanation.get("edge_mask") is None else explanation.edge_mask.detach().double()
    passes = {"saliency": (1, 1), "captum_ig": (50, 50), "gnnexplainer": (epochs, epochs), "pgexplainer": (1, 0)}
    fw, bw = passes[method]
    return Scores(nodes, edges, forward=fw, backward=bw)


def explain(method: str, hm: HookedModule, setup: PygSetup, target: Target, epochs: int = 100,
            ig_steps: int = 16, chunk: int = 64) -> Scores:
    """One method's scores for ``target`` (see the module docstring)."""
    if method not in METHODS:
        raise ConfigError(f"Unknown method {method!r}; choose from {choices(METHODS)}.")
    if method == "patch":
        return patch(hm, target, chunk)
    if method == "attribute":
        return attribute(hm, target)
    if method == "ig":
        return ig(hm, target, ig_steps)
    return pyg_explain(setup, method, target, epochs)


def finite(x: torch.Tensor | None) -> bool:
    return x is not None and bool(torch.isfinite(x).all()) and not math.isnan(float(x.sum()))
