"""What a report is made of, as data: headings, text, tables and figure specs.

Result types describe their report as a list of these blocks (``Result.blocks``); the runner
renders them to ``report.html`` and ``figures/*.png`` (``runs.render``), the CLI prints the
tables, and a web UI can draw the same figure specs interactively. No plotting library is
imported here, so analyses stay free of presentation code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Heading:
    text: str


@dataclass
class Text:
    text: str
    note: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list]
    title: str = ""


@dataclass
class Heatmap:
    """A [rows, cols] grid of values, with an optional CI half-width panel and significance dots.

    ``low`` / ``high`` (the CI's ends), ``p`` and ``q`` (per-cell p-value and BH q-value) are
    optional grids of the same shape: the static report ignores them, the web UI shows them on
    hover."""

    name: str
    title: str
    values: torch.Tensor
    rows: list[str]
    cols: list[str]
    halfwidth: torch.Tensor | None = None
    significant: torch.Tensor | None = None
    xlabel: str = ""
    ylabel: str = "layer"
    value_label: str = "mean effect (0 = corrupt, 1 = clean)"
    caption: str = ""
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    p: torch.Tensor | None = None
    q: torch.Tensor | None = None


@dataclass
class Scatter:
    name: str
    title: str
    x: torch.Tensor
    y: torch.Tensor
    xlabel: str
    ylabel: str
    caption: str = ""
    diagonal: bool = True


@dataclass
class Lines:
    """One or more series over a shared x axis, each optionally with a [low, high] band."""

    name: str
    title: str
    x: list[float]
    series: dict[str, list[float]]
    xlabel: str
    ylabel: str
    low: dict[str, list[float]] = field(default_factory=dict)
    high: dict[str, list[float]] = field(default_factory=dict)
    logy: bool = False
    hline: float | None = None
    ylim: tuple[float, float] | None = None
    caption: str = ""


@dataclass
class Bars:
    """One horizontal bar per label, optionally with a [low, high] interval and a null marker."""

    name: str
    title: str
    labels: list[str]
    values: list[float]
    xlabel: str
    low: list[float] | None = None
    high: list[float] | None = None
    null: list[float | None] | None = None
    caption: str = ""


@dataclass
class Graph:
    """A circuit: nodes placed by layer and directed edges with scores. Edges whose |score| is
    below ``threshold`` are hidden at first (the web UI has a slider over it)."""

    name: str
    title: str
    nodes: list[str]  # node labels, e.g. "embed", "L0.h1", "L1.mlp", "logits"
    layers: list[float]  # per node: its depth for the layout (embed -1, logits n_layers)
    sources: list[int]  # per edge: index into nodes
    targets: list[int]
    scores: list[float]  # per edge
    low: list[float] | None = None  # per edge: the score's CI
    high: list[float] | None = None
    truth: list[bool] | None = None  # per edge: in the ground-truth circuit
    node_scores: list[float] | None = None
    edge_labels: list[str] | None = None  # per edge, e.g. "q" / "k" / "v" for a head's inputs
    threshold: float = 0.0
    score_label: str = "edge score"
    caption: str = ""


Figure = Heatmap | Scatter | Lines | Bars | Graph
Block = Heading | Text | Table | Heatmap | Scatter | Lines | Bars | Graph
FIGURES = (Heatmap, Scatter, Lines, Bars, Graph)


def ci_text(low, high, digits: int = 3) -> str:
    """``[low, high]`` formatted once for every table."""
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"
