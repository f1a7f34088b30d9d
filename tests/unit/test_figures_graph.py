"""A circuit (``blocks.Graph``) renders to a matplotlib figure drawn by hand in layers: one arrow
per edge at or above the threshold, truth edges under it drawn apart as missed, nodes placed by
layer; NaN heatmap cells (cells nobody measured) render in grey."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from interplab.core.blocks import Graph, Heatmap
from interplab.runs.figures import layered_positions
from interplab.runs.render import figure

NODES = ["embed", "L0.h0", "L0.h1", "mlp0", "logits"]
LAYERS = [-1.0, 0.0, 0.0, 0.5, 1.0]
# embed -> L0.h0 three times (q, k, v), embed -> L0.h1, L0.h0 -> mlp0, mlp0 -> logits, L0.h1 -> logits
SOURCES = [0, 0, 0, 0, 1, 3, 2]
TARGETS = [1, 1, 1, 2, 3, 4, 4]
SCORES = [-2.0, 0.5, 1.5, 0.05, -3.0, 4.0, 0.0]
TRUTH = [True, True, False, False, True, True, True]


def _edges(fig, gid: str) -> int:
    return sum(1 for p in fig.axes[0].patches if p.get_gid() == gid)


def test_graph_draws_the_edges_above_its_threshold():
    g = Graph("circuit", "a circuit", NODES, LAYERS, SOURCES, TARGETS, SCORES, truth=TRUTH, threshold=1.0)
    fig = figure(g)
    assert isinstance(fig, Figure)
    assert _edges(fig, "edge") == sum(abs(v) >= 1.0 for v in SCORES) == 4
    assert _edges(fig, "missed") == 2  # truth edges under the threshold: 0.5 (embed -> L0.h0) and 0.0
    plt.close(fig)
    fig = figure(Graph("c", "no truth", NODES, LAYERS, SOURCES, TARGETS, SCORES))  # threshold 0: all
    assert _edges(fig, "edge") == len(SCORES) and _edges(fig, "missed") == 0
    plt.close(fig)


def test_nodes_are_placed_by_layer_and_spread_on_x():
    pos = layered_positions(LAYERS)
    assert [y for _, y in pos] == LAYERS
    assert pos[1][0] == -0.5 and pos[2][0] == 0.5 and pos[0][0] == pos[3][0] == pos[4][0] == 0.0


def test_a_heatmap_with_unmeasured_cells_renders():
    values = torch.tensor([[0.5, float("nan")], [float("nan"), -0.2]])
    fig = figure(Heatmap("h", "partly measured", values, ["L0", "L1"], ["a", "b"], halfwidth=values.abs() / 4))
    image = fig.axes[0].images[0]
    assert image.norm.vmax == 0.5 and image.norm.vmin == -0.5  # the span of the measured cells
    plt.close(fig)
