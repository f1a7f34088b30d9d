"""How a patching-like result is reported: one figure of the mean effect per cell (with the CI
half-width beside it and dots on the cells significant after Benjamini–Hochberg), a table of
the top cells with their CI, permutation p, BH q and Hedges' g, and the headline numbers.

"Patching-like" means any result with ``axes`` (cell axes in order, the first one ``layer``),
per-prompt ``effects`` [prompt, *cells], ``clean_metric`` / ``corrupt_metric`` and an optional
``summary`` (``stats.EffectSummary``): activation patching, causal tracing, path patching and
attribution patching all are. The cells of a 2-D sweep are drawn as a heatmap (positions
labelled with their tokens), a 1-D sweep as bars with their CIs, a 3-D sweep (heads by
position) as one heatmap per head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from interplab.core.blocks import Bars, Block, Heading, Heatmap, Table, Text, ci_text
from interplab.core.result import Result
from interplab.stats import cells_needed, smallest_p

TOP = 10
HEADER = ["cell", "mean effect", "{}% CI", "p (permutation)", "q (BH)", "Hedges g"]


def _mean(result) -> torch.Tensor:
    s = result.summary
    return result.effects.mean(0) if s is None else s.mean


def axis_labels(result, name: str) -> list[str]:
    """Tick labels of one cell axis: positions with their tokens, other axes by letter."""
    values = result.axes[name]
    tokens = getattr(result, "position_labels", None) or []
    roles = getattr(result, "position_roles", None) or {}
    if name == "pos" and tokens:
        return [f"{p}:{tokens[p]!r}" + (f" {roles[p].upper()}" if p in roles else "") for p in values]
    if name == "layer":
        return [f"L{v}" for v in values]
    return [f"{name[0]}{v}" for v in values]


def cell_label(result, index: tuple[int, ...]) -> str:
    """``L3 pos 5:' Mary'``, ``L3 head h2``, ``L3`` or ``L3 head h2 pos 5:' Mary'``."""
    names = list(result.axes)
    parts = [f"L{result.axes[names[0]][index[0]]}"]
    for name, i in zip(names[1:], index[1:]):
        parts += [name, axis_labels(result, name)[i]]
    return " ".join(parts)


@dataclass
class Cell:
    label: str
    mean: float
    low: float | None = None
    high: float | None = None
    p: float | None = None
    q: float | None = None
    g: float | None = None


def top_cells(result, k: int = TOP) -> list[Cell]:
    """The ``k`` cells with the largest |mean effect|, with their statistics."""
    mean, s = _mean(result), result.summary
    out = []
    for flat in mean.flatten().abs().argsort(descending=True)[:k].tolist():
        index = tuple(torch.unravel_index(torch.tensor(flat), mean.shape)) if mean.ndim else ()
        index = tuple(int(i) for i in index)
        if s is None:
            out.append(Cell(cell_label(result, index), float(mean[index])))
        else:
            out.append(Cell(cell_label(result, index), float(s.mean[index]), float(s.low[index]),
                            float(s.high[index]), float(s.p[index]), float(s.q[index]),
                            float(s.effect_size[index])))
    return out


def cells_table(result, k: int = TOP) -> Table:
    s = result.summary
    header = list(HEADER)
    header[2] = header[2].format(int(100 * (s.confidence if s else 0.95)))
    rows = [[c.label, c.mean, "", "", "", ""] if c.low is None else
            [c.label, c.mean, ci_text(c.low, c.high), c.p, c.q, c.g] for c in top_cells(result, k)]
    return Table(header, rows)


def effect_figures(key: str, result, title: str) -> list[Block]:
    """The figure(s) of the mean effect per cell, named ``key`` (``key_hN`` per head in 3-D)."""
    s, mean = result.summary, _mean(result)
    names = list(result.axes)
    caption = (f"{title}: mean over {result.effects.shape[0]} prompts; dots: significant after "
               "Benjamini–Hochberg (q < 0.05).")
    rows = axis_labels(result, names[0])
    if mean.ndim == 1:
        return [Bars(key, title, rows, [float(v) for v in mean], "mean effect (0 = corrupt, 1 = clean)",
                     low=None if s is None else [float(v) for v in s.low],
                     high=None if s is None else [float(v) for v in s.high],
                     caption=f"{title}: mean over {result.effects.shape[0]} prompts with its CI.")]
    half = None if s is None else ((s.high - s.low) / 2).float()
    sig = None if s is None else s.significant
    if mean.ndim == 2:
        return [Heatmap(key, title, mean.float(), rows, axis_labels(result, names[1]), halfwidth=half,
                        significant=sig, xlabel=names[1], caption=caption, **cell_stats(s))]
    out: list[Block] = []  # [layer, head, pos]: one layer × position map per head
    for h, head in enumerate(result.axes[names[1]]):
        out.append(Heatmap(f"{key}_h{head}", f"{title}, head {head}", mean[:, h].float(), rows,
                           axis_labels(result, names[2]), halfwidth=None if half is None else half[:, h],
                           significant=None if sig is None else sig[:, h], xlabel=names[2],
                           caption=caption, **cell_stats(s, (slice(None), h))))
    return out


def cell_stats(s, index=()) -> dict:
    """A heatmap's per-cell CI ends, permutation p and BH q: the summary's own tensors (at
    ``index`` for one head of a 3-D sweep), or nothing without a summary."""
    if s is None:
        return {}
    return {name: getattr(s, name)[index] for name in ("low", "high", "p", "q")}


def patching_blocks(key: str, result, title: str, top: int = TOP) -> list[Block]:
    """The report section of one patching-like result: heading, figure(s), top-cells table and
    what its statistics can detect at this number of prompts."""
    out = [Heading(title), *effect_figures(key, result, title), cells_table(result, top)]
    power = power_text(result)
    cost = getattr(result, "cost", None)
    return (out + ([Text(power, note=True)] if power else [])
            + ([Text(cost.text(), note=True)] if cost is not None else []))


def power_text(result) -> str:
    """The smallest p and q the sweep's tests can reach at its n, said plainly."""
    s = result.summary
    if s is None:
        return ""
    n, m = int(result.effects.shape[0]), int(_mean(result).numel())
    p_min = smallest_p(n)
    need = cells_needed(p_min, m, s.alpha)
    found = int(s.significant.sum())
    text = (f"What these statistics can detect: with n = {n} prompts the smallest attainable permutation "
            f"p is {p_min:.2g}")
    if need is None:
        n_ok = next(k for k in range(2, 64) if smallest_p(k) < s.alpha)
        return text + (f", so no cell can reach q < {s.alpha:g}: this sweep is underpowered for significance "
                       f"at any effect size; use n >= {n_ok} prompts (more for a chance over {m} cells).")
    text += (f"; after Benjamini–Hochberg over {m} cells a cell reaches q < {s.alpha:g} only if at least "
             f"{need} cell{'s' if need > 1 else ''} reach that p.")
    if found == 0 and need > 1:
        text += " No cell passed: the sweep may be underpowered rather than the effects absent; add prompts (--n)."
    return text


def patching_headline(result, k: int = 3) -> dict:
    """Clean / corrupt metric means, the number of significant cells, and the top ``k`` cells'
    mean effects with their CIs."""
    out: dict = {"clean_metric_mean": float(result.clean_metric.float().mean()),
                 "corrupt_metric_mean": float(result.corrupt_metric.float().mean())}
    if result.summary is not None:
        out["significant_cells"] = int(result.summary.significant.sum())
    for i, c in enumerate(top_cells(result, k), 1):
        out[f"top{i}_cell"] = c.label
        out[f"top{i}_effect"] = c.mean
        if c.low is not None:
            out[f"top{i}_low"], out[f"top{i}_high"] = c.low, c.high
    return out


class PatchingReport(Result):
    """Mixin for the result types of patching-like analyses: the summary's tensors stored at the
    result's own prefix (``patch_heads.mean``), the headline of ``patching_headline``, the report
    of ``patching_blocks`` after the analysis's ``intro()``, and the top cells in the terminal."""

    record_inline: ClassVar[tuple[str, ...]] = ("summary",)
    key: ClassVar[str] = "patching"  # the figure's file name

    def section_title(self) -> str:
        return "Patching"

    def intro(self) -> list[Block]:
        return []

    def headline(self) -> dict:
        return patching_headline(self)

    def blocks(self) -> list[Block]:
        return [*self.intro(), *patching_blocks(self.key, self, self.section_title())]

    def terminal(self) -> list[Block]:
        return [*super().terminal(), cells_table(self)]
