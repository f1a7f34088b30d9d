"""Training the GNN ground-truth models (``gnn_models``) on their planted-motif data (``gnn_data``).

Deterministic: the weights are drawn from ``seed``, the data from ``data_seed``, minibatches
from a generator seeded with ``seed``, and training runs on one CPU thread (the caller's thread
count is restored). Adam with a cosine learning-rate decay to zero for a FIXED number of epochs
(the validation and test sets never choose when to stop); the returned weights are the last.

* ``train_gcn``: BA-Shapes, full batch (the one graph), loss on the training nodes.
* ``train_gin``: BA-2Motifs, shuffled minibatches of training graphs.

The shipped models (``gnn_models.load_gnn``) are ``train_gcn(0)`` and ``train_gin(0)``, written
by ``save_gnn``; a slow test retrains them and compares with the shipped accuracies.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from interplab.core.artifacts import sha256_file
from interplab.core.config import check_fields, param, to_dict
from interplab.core.threads import torch_threads
from interplab.groundtruth.gnn_data import BA2MotifsConfig, BAShapesConfig, ba_2motifs, ba_shapes
from interplab.groundtruth.gnn_models import (
    DATA,
    GCN,
    GIN,
    SHIPPED,
    GCNConfig,
    GINConfig,
    accuracy,
    seeded_init,
)


@dataclass(frozen=True)
class GCNTrainConfig:
    """BA-Shapes GCN: architecture, data seed and optimiser."""

    hidden: int = param(64, help="Width of every GCNConv.", ge=1)
    layers: int = param(3, help="GCNConv layers.", ge=1)
    concat: bool = param(True, help="Head on all layers' embeddings concatenated.")
    lr: float = param(0.01, help="Adam learning rate at the start of the cosine decay.", gt=0)
    weight_decay: float = param(5e-4, help="Adam (L2) weight decay.", ge=0)
    epochs: int = param(1000, help="Full-batch steps.", ge=1)
    data_seed: int = param(0, help="Seed of the BA-Shapes graph and its split.")
    seed: int = param(0, help="Seed of the initial weights.")

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class GINTrainConfig:
    """BA-2Motifs GIN: architecture, data seed and optimiser."""

    hidden: int = param(32, help="Width of every GINConv MLP.", ge=1)
    layers: int = param(3, help="GINConv layers.", ge=1)
    pool: str = param("sum", help="Global pooling.", choices=("sum", "mean"))
    lr: float = param(0.003, help="Adam learning rate at the start of the cosine decay.", gt=0)
    weight_decay: float = param(0.0, help="Adam (L2) weight decay.", ge=0)
    epochs: int = param(150, help="Passes over the training graphs.", ge=1)
    batch_size: int = param(64, help="Graphs per minibatch.", ge=1)
    data_seed: int = param(0, help="Seed of the BA-2Motifs graphs and their split.")
    seed: int = param(0, help="Seed of the initial weights and of the minibatch order.")

    def __post_init__(self) -> None:
        check_fields(self)


def _metrics(model, dataset, epochs: int, seconds: float) -> dict:
    return {**{f"{s}_accuracy": accuracy(model, dataset, s) for s in ("train", "val", "test")},
            "epochs": epochs, "seconds": round(seconds, 2)}


def train_gcn(seed: int = 0, config: GCNTrainConfig | None = None) -> tuple[GCN, dict]:
    """The BA-Shapes GCN trained from ``seed`` (overriding ``config.seed``), in eval mode, and
    its metrics: train / val / test accuracy, epochs, seconds, and the configs used."""
    cfg = replace(config or GCNTrainConfig(), seed=seed)
    dataset = ba_shapes(BAShapesConfig(seed=cfg.data_seed))
    g = dataset.graphs[0]
    model_cfg = GCNConfig(in_features=dataset.num_features, hidden=cfg.hidden, layers=cfg.layers,
                          classes=dataset.num_classes, concat=cfg.concat)
    with torch_threads(1):
        start = time.perf_counter()
        model = seeded_init("ba_shapes", model_cfg, cfg.seed).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
        for _ in range(cfg.epochs):
            loss = torch.nn.functional.cross_entropy(model(g.x, g.edge_index)[dataset.train], g.y[dataset.train])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        metrics = _metrics(model, dataset, cfg.epochs, time.perf_counter() - start)
    return model, {**metrics, "train_config": to_dict(cfg), "model_config": to_dict(model_cfg),
                   "dataset": {"name": dataset.name, "config": to_dict(dataset.config)}}


def train_gin(seed: int = 0, config: GINTrainConfig | None = None) -> tuple[GIN, dict]:
    """The BA-2Motifs GIN trained from ``seed`` (overriding ``config.seed``), in eval mode, and
    its metrics: train / val / test accuracy, epochs, seconds, and the configs used."""
    cfg = replace(config or GINTrainConfig(), seed=seed)
    dataset = ba_2motifs(BA2MotifsConfig(seed=cfg.data_seed))
    model_cfg = GINConfig(in_features=dataset.num_features, hidden=cfg.hidden, layers=cfg.layers,
                          classes=dataset.num_classes, pool=cfg.pool)
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch_threads(1):
        start = time.perf_counter()
        model = seeded_init("ba_2motifs", model_cfg, cfg.seed).train()
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
        for _ in range(cfg.epochs):
            order = dataset.train[torch.randperm(len(dataset.train), generator=gen)]
            for k in range(0, len(order), cfg.batch_size):
                b = dataset.batch(order[k:k + cfg.batch_size])
                loss = torch.nn.functional.cross_entropy(model(b.x, b.edge_index, b.batch), b.y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        model.eval()
        metrics = _metrics(model, dataset, cfg.epochs, time.perf_counter() - start)
    return model, {**metrics, "train_config": to_dict(cfg), "model_config": to_dict(model_cfg),
                   "dataset": {"name": dataset.name, "config": to_dict(dataset.config)}}


def save_gnn(name: str, model: GCN | GIN, metrics: dict, directory: Path = DATA) -> Path:
    """Write ``SHIPPED[name]`` .safetensors (the weights) and .json (configs, seeds, accuracies,
    versions and the weights' sha256) into ``directory``; returns the weights' path."""
    import torch_geometric

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = SHIPPED[name]
    weights = directory / f"{stem}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta = {
        "name": name,
        "model": type(model).__name__,
        "model_config": metrics["model_config"],
        "train_config": metrics["train_config"],
        "dataset": metrics["dataset"],
        "seed": metrics["train_config"]["seed"],
        "data_seed": metrics["train_config"]["data_seed"],
        "metrics": {k: metrics[k] for k in ("train_accuracy", "val_accuracy", "test_accuracy", "epochs", "seconds")},
        "versions": {"torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
                     "python": platform.python_version()},
        "weights": weights.name,
        "sha256": sha256_file(weights),
    }
    (directory / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return weights
