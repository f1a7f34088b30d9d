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
    """A [rows, cols] grid of values, with an optional CI half-width panel and significance dots."""

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


Figure = Heatmap | Scatter | Lines | Bars
Block = Heading | Text | Table | Heatmap | Scatter | Lines | Bars
FIGURES = (Heatmap, Scatter, Lines, Bars)


def ci_text(low, high, digits: int = 3) -> str:
    """``[low, high]`` formatted once for every table."""
    return f"[{float(low):.{digits}f}, {float(high):.{digits}f}]"
