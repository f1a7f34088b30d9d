"""The graph neural networks trained on the planted-motif graphs (``gnn_data``).

* ``GCN`` for BA-Shapes (the GNNExplainer setup, Ying et al. 2019): three ``GCNConv`` layers
  (``convs.0``, ``convs.1``, ``convs.2``), each followed by its own ReLU (``acts.0`` ..), and a
  linear ``head`` on the three layers' embeddings concatenated (``concat=True``) or on the last
  one. ``gcn(x, edge_index) -> node logits`` [N, classes]; an optional ``edge_weight`` [E]
  scales each edge's message (GCNConv's own edge weights, for gradient-based edge saliency).
* ``GIN`` for BA-2Motifs: three ``GINConv`` layers (``convs.i``, each with a 2-layer MLP
  ``convs.i.nn`` = Linear, ReLU, Linear), ReLU after each (``acts.i``), a global ``pool``
  (sum or mean over each graph's nodes; a module, so its output is a site) and a linear
  ``head``. ``gin(x, edge_index, batch) -> graph logits`` [B, classes]; ``batch`` None means
  one graph.

Every module named above is a distinct submodule, so hooks / sites can be declared on them.
Explainers that mask messages through PyG's ``MessagePassing`` explain mechanism (PyG's
``Explainer``, Captum via ``to_captum_model``) work on both, as the convs are PyG's own.
Shipped weights (``data/gnn_<dataset>_seed0.safetensors`` + ``.json``, written by
``gnn_train.save_gnn``): ``load_gnn(name) -> (model, dataset)`` regenerates the dataset from the
recorded seed and loads the weights after checking their sha256 against the json (a mismatch
is an ``ArtifactError``); ``gnn_meta(name)`` is that json (configs, seeds, accuracies,
versions); ``random_init(name, seed) -> model`` is the same architecture with fresh weights
drawn from ``seed`` (the null); ``accuracy(model, dataset, split)`` scores either task.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import torch
from torch import nn

from interplab.core.artifacts import load_tensors, read_json
from interplab.core.config import check_fields, param
from interplab.core.errors import InputError, choices
from interplab.groundtruth.gnn_data import (
    DATASETS,
    BA2MotifsConfig,
    BAShapesConfig,
    GNNDataset,
    ba_2motifs,
    ba_shapes,
    import_pyg,
)

DATA = Path(__file__).resolve().parent / "data"
SHIPPED = {"ba_shapes": "gnn_ba_shapes_seed0", "ba_2motifs": "gnn_ba_2motifs_seed0"}


@dataclass(frozen=True)
class GCNConfig:
    """Architecture of the BA-Shapes node classifier."""

    in_features: int = param(10, help="Node feature width.", ge=1)
    hidden: int = param(20, help="Width of every GCNConv.", ge=1)
    layers: int = param(3, help="GCNConv layers.", ge=1)
    classes: int = param(4, help="Node classes.", ge=2)
    concat: bool = param(True, help="Head on all layers' embeddings concatenated (else the last).")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class GINConfig:
    """Architecture of the BA-2Motifs graph classifier."""

    in_features: int = param(10, help="Node feature width.", ge=1)
    hidden: int = param(32, help="Width of every GINConv MLP.", ge=1)
    layers: int = param(3, help="GINConv layers.", ge=1)
    classes: int = param(2, help="Graph classes.", ge=2)
    pool: str = param("sum", help="Global pooling of the last layer's node embeddings.", choices=("sum", "mean"))

    def __post_init__(self) -> None:
        check_fields(self)


class GCN(nn.Module):
    """GCNConv x layers with ReLU, a linear head per node."""

    def __init__(self, config: GCNConfig = GCNConfig()):
        super().__init__()
        conv = import_pyg()["GCNConv"]
        self.config = config
        widths = [config.in_features] + [config.hidden] * config.layers
        self.convs = nn.ModuleList(conv(a, b) for a, b in pairwise(widths))
        self.acts = nn.ModuleList(nn.ReLU() for _ in range(config.layers))
        self.head = nn.Linear(config.hidden * (config.layers if config.concat else 1), config.classes)

    def embeddings(self, x: torch.Tensor, edge_index: torch.Tensor,
                   edge_weight: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Every layer's node embeddings (after its ReLU)."""
        out, h = [], x
        for conv, act in zip(self.convs, self.acts):
            h = act(conv(h, edge_index, edge_weight))
            out.append(h)
        return out

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        hs = self.embeddings(x, edge_index, edge_weight)
        return self.head(torch.cat(hs, -1) if self.config.concat else hs[-1])


class GlobalPool(nn.Module):
    """Sum or mean of each graph's node embeddings: [N, d] -> [B, d]."""

    def __init__(self, kind: str = "sum"):
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        pyg = import_pyg()
        return pyg["global_add_pool" if self.kind == "sum" else "global_mean_pool"](x, batch)

    def extra_repr(self) -> str:
        return self.kind


class GIN(nn.Module):
    """GINConv (2-layer MLP) x layers with ReLU, a global pool and a linear head per graph."""

    def __init__(self, config: GINConfig = GINConfig()):
        super().__init__()
        conv = import_pyg()["GINConv"]
        self.config = config
        widths = [config.in_features] + [config.hidden] * config.layers
        self.convs = nn.ModuleList(
            conv(nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, b)))
            for a, b in pairwise(widths))
        self.acts = nn.ModuleList(nn.ReLU() for _ in range(config.layers))
        self.pool = GlobalPool(config.pool)
        self.head = nn.Linear(config.hidden, config.classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor,
                batch: torch.Tensor | None = None) -> torch.Tensor:
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        h = x
        for conv, act in zip(self.convs, self.acts):
            h = act(conv(h, edge_index))
        return self.head(self.pool(h, batch))


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise InputError(f"Unknown GNN ground-truth model {name!r}; valid: {choices(DATASETS)}.")


def build(name: str, config: GCNConfig | GINConfig) -> GCN | GIN:
    """The architecture trained on dataset ``name``: a GCN for ba_shapes, a GIN for ba_2motifs."""
    _check_name(name)
    return GCN(config) if name == "ba_shapes" else GIN(config)


def seeded_init(name: str, config: GCNConfig | GINConfig, seed: int) -> GCN | GIN:
    """The model's initial weights drawn from ``seed`` (torch's global generator is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(name, config)


def accuracy(model: GCN | GIN, dataset: GNNDataset, split: str = "test") -> float:
    """Share of the split's nodes (BA-Shapes) or graphs (BA-2Motifs) the model labels right."""
    index = dataset.split(split)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        if dataset.task == "node":
            g = dataset.graphs[0]
            pred, y = model(g.x, g.edge_index)[index].argmax(-1), g.y[index]
        else:
            b = dataset.batch(index)
            pred, y = model(b.x, b.edge_index, b.batch).argmax(-1), b.y
    model.train(was_training)
    return float((pred == y).float().mean())


def gnn_meta(name: str, directory: Path = DATA) -> dict:
    """The json written next to the shipped weights of ``name``: configs, seeds, accuracies,
    versions and the weights' sha256."""
    _check_name(name)
    return read_json(Path(directory) / f"{SHIPPED[name]}.json",
                     fix="Reinstall interplab, or retrain with interplab.groundtruth.gnn_train.")


def load_gnn(name: str, directory: Path = DATA) -> tuple[GCN | GIN, GNNDataset]:
    """The shipped model trained on ``name`` ("ba_shapes" | "ba_2motifs"), in eval mode, and
    its dataset regenerated from the recorded seed. Weights whose sha256 differs from the one
    recorded in the json are refused (``ArtifactError``)."""
    meta = gnn_meta(name, directory)
    model_cfg = (GCNConfig if name == "ba_shapes" else GINConfig)(**meta["model_config"])
    data_cfg = meta["dataset"]["config"]
    dataset = ba_shapes(BAShapesConfig(**data_cfg)) if name == "ba_shapes" else ba_2motifs(BA2MotifsConfig(**data_cfg))
    weights = load_tensors(Path(directory) / meta["weights"], sha256=meta["sha256"],
                           fix="The shipped GNN weights were changed or damaged: reinstall interplab, or "
                               "retrain them with interplab.groundtruth.gnn_train.")
    model = build(name, model_cfg)
    model.load_state_dict(weights)
    return model.eval(), dataset


def random_init(name: str, seed: int = 0, directory: Path = DATA) -> GCN | GIN:
    """The shipped model's architecture with fresh weights drawn from ``seed`` (the null), in
    eval mode; its data is ``load_gnn(name)``'s dataset."""
    _check_name(name)
    meta = gnn_meta(name, directory)
    model_cfg = (GCNConfig if name == "ba_shapes" else GINConfig)(**meta["model_config"])
    return seeded_init(name, model_cfg, seed).eval()
