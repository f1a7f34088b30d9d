"""Graphs with planted motifs whose explanation is known: BA-Shapes and BA-2Motifs.

Both are generated here, deterministically from a seed, with torch_geometric's generators
(``ExplainerDataset``, ``BAGraph``, ``HouseMotif`` / ``CycleMotif``); nothing is downloaded.

* **BA-Shapes** (node classification; Ying et al. 2019, "GNNExplainer"): one Barabási–Albert
  graph (300 nodes, 5 edges per new node) with 80 five-node "house" motifs, each joined to a
  random base node by one edge from a random node of the house. Labels: 0 for the 300 base
  nodes; for a house's nodes PyG's ``HouseMotif`` roles + 1: **1** the two nodes under the roof
  (joined to the apex), **2** the two floor nodes, **3** the roof apex. Features: ten constant
  ones per node (as in the paper), so only the structure tells the classes apart.
* **BA-2Motifs** (graph classification; Luo et al. 2020, "PGExplainer"): 1000 graphs, each a
  BA graph of 20 nodes (1 edge per new node) with one motif joined to it by one edge: a house
  (class 0, 500 graphs) or a 5-cycle (class 1, 500 graphs). Features: ten constant ones.
  PyG's BA generator drops the self-loops and repeats it draws, so a base graph has 13 to 19
  edges (a forest, some nodes isolated) rather than always a 19-edge tree: the total edge
  count overlaps between the classes and does not give the class away.

Every graph is a PyG ``Data`` with ``x`` [N, 10], ``edge_index`` [2, E] (both directions of
every undirected edge), ``y``, and the ground truth: ``node_mask`` [N] / ``edge_mask`` [E]
(bool, True on every motif node / edge; the edge joining a motif to the base graph is not a
motif edge), ``motif`` [N] (the motif each node belongs to, -1 for base nodes) and
``edge_motif`` [E] (the motif of an edge whose two ends lie in the same motif, else -1). The
ground truth of *one* explained node or graph is ``GNNDataset.truth(i)``: the masks of the
explained node's own house (BA-Shapes) or of the graph's only motif (BA-2Motifs). Splits are
seeded and stratified by label: 80 / 10 / 10 % of the nodes (BA-Shapes) or graphs (BA-2Motifs).

torch_geometric is the optional extra ``gnn``; without it these functions raise
``MissingDependencyError`` naming ``pip install 'interplab[gnn]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from interplab.core.config import check_fields, param
from interplab.core.errors import ConfigError, InputError, MissingDependencyError, choices

INSTALL = "pip install 'interplab[gnn]'"
DATASETS = ("ba_shapes", "ba_2motifs")
BA_SHAPES_CLASSES = ("base", "house: under the roof", "house: floor", "house: apex")
BA_2MOTIFS_CLASSES = ("house", "5-cycle")


def import_pyg() -> dict[str, Any]:
    """torch_geometric's parts used here, or MissingDependencyError naming the install command."""
    try:
        from torch_geometric.data import Batch, Data
        from torch_geometric.datasets import ExplainerDataset
        from torch_geometric.datasets.graph_generator import BAGraph
        from torch_geometric.datasets.motif_generator import CycleMotif, HouseMotif
        from torch_geometric.nn import GCNConv, GINConv, global_add_pool, global_mean_pool
    except ImportError as err:
        raise MissingDependencyError(
            f"The GNN ground truth (BA-Shapes, BA-2Motifs and their models) needs torch_geometric, "
            f"which could not be imported ({err}). Install it with: {INSTALL}"
        ) from err
    return {"Batch": Batch, "Data": Data, "ExplainerDataset": ExplainerDataset, "BAGraph": BAGraph,
            "CycleMotif": CycleMotif, "HouseMotif": HouseMotif, "GCNConv": GCNConv, "GINConv": GINConv,
            "global_add_pool": global_add_pool, "global_mean_pool": global_mean_pool}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's and numpy's global generators (PyG's BA generator draws from both) and
    restore them afterwards, so generating a dataset leaves the caller's random state alone."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


@dataclass(frozen=True)
class BAShapesConfig:
    """One BA graph with house motifs attached (node classification)."""

    base_nodes: int = param(300, help="Nodes of the Barabási–Albert base graph.", ge=2)
    base_edges: int = param(5, help="Edges from each new BA node to existing nodes.", ge=1)
    motifs: int = param(80, help="House motifs attached (5 nodes, 6 undirected edges each).", ge=1)
    features: int = param(10, help="Width of the constant (all ones) node features.", ge=1)
    train_fraction: float = param(0.8, help="Share of each class's nodes trained on.", gt=0, lt=1)
    val_fraction: float = param(0.1, help="Share of each class's nodes for validation; the rest test.", gt=0, lt=1)
    seed: int = param(0, help="Seed of the graph, the motifs' attachment and the split.")

    def __post_init__(self) -> None:
        check_fields(self)
        _check_split(self)
        if self.base_edges >= self.base_nodes:
            raise ConfigError(f"base_edges ({self.base_edges}) must be below base_nodes ({self.base_nodes}).")


@dataclass(frozen=True)
class BA2MotifsConfig:
    """Small BA graphs with one house (class 0) or one 5-cycle (class 1) each (graph classification)."""

    graphs: int = param(1000, help="Graphs in all, half per class (must be even).", ge=2)
    base_nodes: int = param(20, help="Nodes of each graph's Barabási–Albert base.", ge=2)
    base_edges: int = param(1, help="Edges from each new BA node to existing nodes.", ge=1)
    features: int = param(10, help="Width of the constant (all ones) node features.", ge=1)
    train_fraction: float = param(0.8, help="Share of each class's graphs trained on.", gt=0, lt=1)
    val_fraction: float = param(0.1, help="Share of each class's graphs for validation; the rest test.", gt=0, lt=1)
    seed: int = param(0, help="Seed of the graphs, the motifs' attachment and the split.")

    def __post_init__(self) -> None:
        check_fields(self)
        _check_split(self)
        if self.graphs % 2:
            raise ConfigError(f"graphs must be even (half per class), got {self.graphs}.")
        if self.base_edges >= self.base_nodes:
            raise ConfigError(f"base_edges ({self.base_edges}) must be below base_nodes ({self.base_nodes}).")


def _check_split(cfg) -> None:
    if cfg.train_fraction + cfg.val_fraction >= 1:
        raise ConfigError(f"train_fraction + val_fraction must leave a test set: got "
                          f"{cfg.train_fraction} + {cfg.val_fraction} >= 1.")


@dataclass(frozen=True)
class GroundTruth:
    """The known explanation of one prediction: the motif the explained node lies in (BA-Shapes)
    or the graph's motif (BA-2Motifs), as masks over that graph's nodes and ``edge_index`` columns."""

    graph: int  # index into GNNDataset.graphs
    node: int | None  # the explained node (BA-Shapes), None for a graph prediction
    motif: int  # the motif's id in that graph (``Data.motif``)
    node_mask: torch.Tensor  # bool [N]: the motif's nodes
    edge_mask: torch.Tensor  # bool [E]: the motif's edges, both directions

    @property
    def nodes(self) -> list[int]:
        return self.node_mask.nonzero().flatten().tolist()

    @property
    def edges(self) -> list[int]:
        """Columns of ``edge_index`` inside the motif."""
        return self.edge_mask.nonzero().flatten().tolist()


@dataclass
class GNNDataset:
    """A generated dataset: its graphs (one for BA-Shapes), the seeded split and the truth.

    ``train`` / ``val`` / ``test`` index nodes of ``graphs[0]`` (``task == "node"``) or graphs
    (``task == "graph"``)."""

    name: str  # "ba_shapes" | "ba_2motifs"
    task: str  # "node" | "graph"
    config: BAShapesConfig | BA2MotifsConfig
    graphs: list  # of torch_geometric.data.Data
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_features(self) -> int:
        return int(self.graphs[0].x.shape[1])

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "val", "test"):
            raise InputError(f"Unknown split {name!r}; valid: {choices(('train', 'val', 'test'))}.")
        return getattr(self, name)

    def labels(self) -> torch.Tensor:
        """Node labels of the graph (node task) or one label per graph (graph task)."""
        if self.task == "node":
            return self.graphs[0].y
        return torch.cat([g.y for g in self.graphs])

    def batch(self, index: torch.Tensor | list[int] | None = None):
        """The graphs at ``index`` (all by default) as one PyG ``Batch`` (graph task)."""
        if self.task != "graph":
            raise InputError(f"{self.name} is one graph (node task): use dataset.graphs[0].")
        pyg = import_pyg()
        index = range(len(self.graphs)) if index is None else torch.as_tensor(index).tolist()
        return pyg["Batch"].from_data_list([self.graphs[i] for i in index])

    def explained(self, split: str = "test") -> torch.Tensor:
        """What has a ground-truth explanation in ``split``: its motif nodes (node task, label
        > 0; base nodes have none) or all its graphs (graph task)."""
        index = self.split(split)
        if self.task == "node":
            return index[self.graphs[0].y[index] > 0]
        return index

    def truth(self, i: int) -> GroundTruth:
        """The ground truth for explaining node ``i`` (node task: its own house) or graph ``i``
        (graph task: its motif)."""
        i = int(i)
        if self.task == "node":
            data, graph, node = self.graphs[0], 0, i
            if not 0 <= i < data.num_nodes:
                raise InputError(f"Node {i} is not in {self.name} (nodes 0..{data.num_nodes - 1}).")
            motif = int(data.motif[i])
            if motif < 0:
                raise InputError(f"Node {i} is a base node of {self.name} (label 0): it has no motif, so "
                                 "no ground-truth explanation. Explain motif nodes (dataset.explained()).")
        else:
            if not 0 <= i < len(self.graphs):
                raise InputError(f"Graph {i} is not in {self.name} (graphs 0..{len(self.graphs) - 1}).")
            data, graph, node, motif = self.graphs[i], i, None, 0
        return GroundTruth(graph, node, motif, data.motif == motif, data.edge_motif == motif)


def _stratified_split(y: torch.Tensor, train: float, val: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Per class, a seeded permutation cut at ``train`` and ``train + val``; each part sorted."""
    gen = torch.Generator().manual_seed(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for cls in torch.unique(y).tolist():
        members = (y == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_train, n_val = round(train * len(members)), round(val * len(members))
        for part, chunk in zip(parts, (members[:n_train], members[n_train:n_train + n_val],
                                       members[n_train + n_val:])):
            part.append(chunk)
    return tuple(torch.cat(p).sort().values for p in parts)


def _with_truth(explanation, features: int, y: torch.Tensor, motif_size: int):
    """A PyG ``Data`` from an ``ExplainerDataset`` graph, with bool masks and motif ids.

    ``ExplainerDataset`` appends each motif's nodes as one block after the base graph's, so the
    motif of a node is its block; an edge is a motif edge when both its ends lie in one block."""
    pyg = import_pyg()
    node_mask = explanation.node_mask.bool()
    n = int(node_mask.numel())
    n_base = n - int(node_mask.sum())
    assert not node_mask[:n_base].any() and node_mask[n_base:].all()
    idx = torch.arange(n)
    motif = torch.where(node_mask, torch.div(idx - n_base, motif_size, rounding_mode="floor"), -1)
    src, dst = explanation.edge_index
    edge_motif = torch.where(motif[src] == motif[dst], motif[src], -1)
    edge_mask = explanation.edge_mask.bool()
    assert torch.equal(edge_mask, edge_motif >= 0)
    return pyg["Data"](x=torch.ones(n, features), edge_index=explanation.edge_index.clone(), y=y,
                       node_mask=node_mask, edge_mask=edge_mask, motif=motif, edge_motif=edge_motif)


def ba_shapes(config: BAShapesConfig | None = None) -> GNNDataset:
    """BA-Shapes (node classification), generated from ``config.seed``."""
    cfg = config or BAShapesConfig()
    pyg = import_pyg()
    with seeded(cfg.seed):
        gen = pyg["ExplainerDataset"](pyg["BAGraph"](num_nodes=cfg.base_nodes, num_edges=cfg.base_edges),
                                      pyg["HouseMotif"](), num_motifs=cfg.motifs)
        explanation = gen[0]
    data = _with_truth(explanation, cfg.features, explanation.y.clone(), motif_size=5)
    train, val, test = _stratified_split(data.y, cfg.train_fraction, cfg.val_fraction, cfg.seed)
    return GNNDataset("ba_shapes", "node", cfg, [data], train, val, test, BA_SHAPES_CLASSES)


def ba_2motifs(config: BA2MotifsConfig | None = None) -> GNNDataset:
    """BA-2Motifs (graph classification), generated from ``config.seed``: the house graphs
    first (class 0), then the 5-cycle graphs (class 1)."""
    cfg = config or BA2MotifsConfig()
    pyg = import_pyg()
    graphs = []
    with seeded(cfg.seed):
        for cls, motif in enumerate((pyg["HouseMotif"](), pyg["CycleMotif"](5))):
            gen = pyg["ExplainerDataset"](pyg["BAGraph"](num_nodes=cfg.base_nodes, num_edges=cfg.base_edges),
                                          motif, num_motifs=1, num_graphs=cfg.graphs // 2)
            graphs += [_with_truth(gen[i], cfg.features, torch.tensor([cls]), motif_size=5)
                       for i in range(len(gen))]
    y = torch.tensor([int(g.y) for g in graphs])
    train, val, test = _stratified_split(y, cfg.train_fraction, cfg.val_fraction, cfg.seed)
    return GNNDataset("ba_2motifs", "graph", cfg, graphs, train, val, test, BA_2MOTIFS_CLASSES)


def gnn_dataset(name: str, seed: int = 0) -> GNNDataset:
    """``ba_shapes`` or ``ba_2motifs`` with its default config and the given seed."""
    if name == "ba_shapes":
        return ba_shapes(BAShapesConfig(seed=seed))
    if name == "ba_2motifs":
        return ba_2motifs(BA2MotifsConfig(seed=seed))
    raise InputError(f"Unknown GNN dataset {name!r}; valid: {choices(DATASETS)}.")
