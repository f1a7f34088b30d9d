"""Figures for run reports (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def effect_heatmap(mean: torch.Tensor, row_labels, col_labels, title: str, *,
                   significant: torch.Tensor | None = None, halfwidth: torch.Tensor | None = None,
                   xlabel: str = "", ylabel: str = "layer", center: float = 0.0,
                   value_label: str = "mean effect (0 = corrupt, 1 = clean)"):
    """Mean effect per cell on a diverging scale; dots mark cells significant after BH; a
    second panel shows the CI half-width, so a bright cell with a wide CI reads as uncertain."""
    panels = 2 if halfwidth is not None else 1
    rows, cols = mean.shape
    # A report page is ~1,100 px wide: wide grids put the uncertainty panel below the mean
    # rather than beside it, so the figure is never squeezed until its tick labels are unreadable.
    stacked = panels == 2 and cols > 8
    width = min(3 + 0.45 * cols, 10) * (1 if stacked else panels)
    height = (1.8 + 0.2 * rows) * (2 if stacked else 1)
    fig, axes = plt.subplots(2 if stacked else 1, 1 if stacked else panels, figsize=(width, height), squeeze=False)
    axes = axes.reshape(1, -1)
    span = max(float((mean - center).abs().max()), 1e-6)
    ax = axes[0, 0]
    im = ax.imshow(mean.numpy(), cmap="RdBu_r", vmin=center - span, vmax=center + span,
                   aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.04, label=value_label)
    if significant is not None:
        ys, xs = significant.nonzero(as_tuple=True)
        if len(xs):
            ax.scatter(xs.numpy(), ys.numpy(), s=5, c="k", marker="o", label="q < 0.05 (BH)")
            ax.legend(loc="upper left", fontsize=7, framealpha=0.8)
    _label(ax, row_labels, col_labels, title, xlabel, ylabel)
    if halfwidth is not None:
        ax2 = axes[0, 1]
        im2 = ax2.imshow(halfwidth.numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
        fig.colorbar(im2, ax=ax2, fraction=0.04, label="CI half-width")
        _label(ax2, row_labels, col_labels, "uncertainty (bootstrap CI half-width)", xlabel, ylabel)
    fig.tight_layout()
    return fig


def _label(ax, row_labels, col_labels, title, xlabel, ylabel):
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels, rotation=70, fontsize=7)
    step = max(1, len(row_labels) // 15)
    ax.set_yticks(range(0, len(row_labels), step))
    ax.set_yticklabels([row_labels[i] for i in range(0, len(row_labels), step)], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def scatter_compare(x: torch.Tensor, y: torch.Tensor, xlabel: str, ylabel: str, title: str):
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.scatter(x.numpy(), y.numpy(), s=10, alpha=0.7)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def lines_plot(x, series: dict, xlabel: str, ylabel: str, title: str, *, low=None, high=None,
               logy: bool = False, hline: float | None = None, ylim=None):
    """Series over one x axis; where ``low``/``high`` give a series' interval it gets error bars."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    low, high = low or {}, high or {}
    for label, ys in series.items():
        if label in low and label in high:
            err = [[y - lo for y, lo in zip(ys, low[label])], [hi - y for y, hi in zip(ys, high[label])]]
            ax.errorbar(x, ys, yerr=err, marker="o", ms=3, capsize=3, label=label)
        else:
            ax.plot(x, ys, marker="o", ms=3, label=label)
    if hline is not None:
        ax.axhline(hline, color="grey", linewidth=0.8)
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(series) > 1 or low:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def bars_plot(labels, values, xlabel: str, title: str, *, low=None, high=None, null=None):
    """One row per label: the value with its interval, and a cross at the null where given."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.28 * n))
    ys = list(range(n))
    if low is not None and high is not None:
        err = [[max(v - lo, 0.0) for v, lo in zip(values, low)], [max(hi - v, 0.0) for v, hi in zip(values, high)]]
        ax.errorbar(values, ys, xerr=err, fmt="o", ms=4, capsize=3, label="score [95% CI]")
    else:
        ax.plot(values, ys, "o", ms=4, label="score")
    if null is not None:
        pts = [(v, y) for v, y in zip(null, ys) if v is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "x", color="grey", label="null")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
