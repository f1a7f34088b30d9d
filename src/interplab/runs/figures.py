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
    finite = (mean - center).abs().nan_to_num(nan=0.0)  # NaN cells (not measured) are left blank
    span = max(float(finite.max()) if finite.numel() else 0.0, 1e-6)
    ax = axes[0, 0]
    im = ax.imshow(mean.numpy(), cmap=_with_bad("RdBu_r"), vmin=center - span, vmax=center + span,
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
        im2 = ax2.imshow(halfwidth.numpy(), cmap=_with_bad("viridis"), aspect="auto", interpolation="nearest")
        fig.colorbar(im2, ax=ax2, fraction=0.04, label="CI half-width")
        _label(ax2, row_labels, col_labels, "uncertainty (bootstrap CI half-width)", xlabel, ylabel)
    fig.tight_layout()
    return fig


def _with_bad(name: str):
    """The colormap with NaN cells (not measured) in light grey, not the colour of a value."""
    return plt.get_cmap(name).with_extremes(bad="0.85")


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


def layered_positions(layers) -> list[tuple[float, float]]:
    """(x, y) per node: y its layer, the nodes of one layer spread evenly on x around 0, in order."""
    rows: dict[float, list[int]] = {}
    for i, layer in enumerate(layers):
        rows.setdefault(float(layer), []).append(i)
    pos: list[tuple[float, float]] = [(0.0, 0.0)] * len(layers)
    for layer, members in rows.items():
        for j, i in enumerate(members):
            pos[i] = (j - (len(members) - 1) / 2, layer)
    return pos


def graph_plot(nodes, layers, sources, targets, scores, title: str, *, truth=None, threshold: float = 0.0,
               node_scores=None, score_label: str = "edge score"):
    """A circuit drawn by hand in layers (no graph library): nodes on the y axis by layer, spread
    on x; each edge with |score| >= ``threshold`` as an arrow whose colour (diverging, 0 white)
    and width follow its score -- solid if the truth has it, dashed if not -- and truth edges
    under the threshold as thin dotted grey arrows (missed). Parallel edges between one pair of
    nodes (a head's q / k / v) bend apart. Drawn edges carry ``gid`` "edge", missed ones "missed"."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    pos = layered_positions(layers)
    widest = max((sum(1 for v in layers if float(v) == float(layer)) for layer in layers), default=1)
    levels = len({float(v) for v in layers})
    fig, ax = plt.subplots(figsize=(min(3.5 + 1.1 * widest, 12), min(1.6 + 1.1 * levels, 10)))
    span = max((abs(float(v)) for v in scores), default=0.0) or 1.0
    norm, cmap = Normalize(-span, span), plt.get_cmap("RdBu_r")
    truth = list(truth) if truth is not None else None
    shown = {e for e, v in enumerate(scores) if abs(float(v)) >= threshold}
    missed = {e for e in range(len(scores)) if truth is not None and truth[e] and e not in shown}
    pairs: dict[tuple[int, int], list[int]] = {}
    for e in sorted(shown | missed):
        pairs.setdefault((int(sources[e]), int(targets[e])), []).append(e)
    for es in pairs.values():
        for j, e in enumerate(es):
            v = float(scores[e])
            if e in shown:
                style = {"color": cmap(norm(v)), "linewidth": 0.6 + 3.0 * abs(v) / span,
                         "linestyle": "-" if truth is None or truth[e] else "--"}
            else:
                style = {"color": "0.6", "linewidth": 0.8, "linestyle": ":"}
            ax.add_patch(FancyArrowPatch(
                pos[int(sources[e])], pos[int(targets[e])], arrowstyle="-|>", mutation_scale=9, shrinkA=12,
                shrinkB=12, connectionstyle=f"arc3,rad={0.18 * (j - (len(es) - 1) / 2)}", zorder=1, alpha=0.9,
                gid="edge" if e in shown else "missed", **style))
    xs, ys = [p[0] for p in pos], [p[1] for p in pos]
    colours = "white" if node_scores is None else [cmap(norm(float(v))) for v in node_scores]
    ax.scatter(xs, ys, s=520, c=colours, edgecolors="k", linewidths=0.8, zorder=2)
    for (x, y), name in zip(pos, nodes):
        ax.annotate(name, (x, y), ha="center", va="center", fontsize=6, zorder=3)
    ax.set_xlim(min(xs, default=0) - 0.8, max(xs, default=0) + 0.8)
    ax.set_ylim(min(ys, default=0) - 0.6, max(ys, default=0) + 0.6)
    ax.set_yticks(sorted(set(ys)))
    ax.set_xticks([])
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(ScalarMappable(norm, cmap), ax=ax, fraction=0.04)
    bar.set_label(score_label, fontsize=7)
    if truth is not None:
        ax.legend(handles=[Line2D([], [], color="k", linestyle="-", label="in the truth"),
                           Line2D([], [], color="k", linestyle="--", label="not in the truth"),
                           Line2D([], [], color="0.6", linestyle=":", label="truth, under the threshold")],
                  fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    fig.tight_layout()
    return fig
