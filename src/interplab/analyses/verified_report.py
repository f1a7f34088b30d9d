"""How a verified sweep (``analyses.verified``) is reported: the AtP* estimate over the whole
grid with the verified cells that pass BH marked, a table of every exactly patched cell (the
top-k by AtP* and the random sample) with its CI, p and q, and what the random sample says
about the cells nobody patched."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from interplab.analyses.patching_report import axis_labels, power_text
from interplab.analyses.verified import VerifiedResult
from interplab.core.blocks import Block, Heading, Heatmap, Table, Text, ci_text


def _grid(v: VerifiedResult, roles: dict[int, str]) -> SimpleNamespace:
    tokens = getattr(v.exact, "position_labels", []) if v.exact is not None else []
    return SimpleNamespace(axes=v.axes, position_labels=tokens, position_roles=roles)


def _index(grid, coords: list[int]) -> tuple[int, ...]:
    """The grid index of a cell given by its coordinates (axis values)."""
    return tuple(values.index(c) for values, c in zip(grid.axes.values(), coords))


def _cell_name(grid, coords: list[int]) -> str:
    names = list(grid.axes)
    parts = [f"L{coords[0]}"]
    for name, value in zip(names[1:], coords[1:]):
        labels = axis_labels(grid, name)
        parts += [name, labels[grid.axes[name].index(value)]]
    return " ".join(parts)


def verified_cells(v: VerifiedResult, roles: dict[int, str]) -> list[dict]:
    """Every exactly patched cell: its name, AtP* estimate, exact effect with CI, p, q, and why
    it was patched (top-k or random), in the order the sweep chose them."""
    grid, s = _grid(v, roles), v.exact.summary
    est = v.estimate.effects.mean(0)
    n_top = len(v.cells) - int(v.sampled.sum())
    rows = []
    for i, coords in enumerate(v.cells):
        index = _index(grid, coords)
        rows.append({"cell": _cell_name(grid, coords), "estimate": float(est[index]),
                     "effect": float(s.mean[i]), "low": float(s.low[i]), "high": float(s.high[i]),
                     "p": float(s.p[i]), "q": float(s.q[i]), "chosen": "top-k" if i < n_top else "random"})
    return rows


def exact_grids(v: VerifiedResult, grid=None) -> dict[str, torch.Tensor]:
    """The exact cells' mean, CI ends, p and q (``v.exact.summary``, one entry per verified cell)
    placed on the sweep's grid; NaN where a cell was not patched."""
    grid = grid or _grid(v, {})
    s = v.exact.summary
    out = {}
    for name in ("mean", "low", "high", "p", "q"):
        values = getattr(s, name)
        out[name] = torch.full(v.verified.shape, float("nan"), dtype=values.dtype)
        for i, coords in enumerate(v.cells):
            out[name][_index(grid, coords)] = values[i]
    return out


def verified_blocks(key: str, v: VerifiedResult, title: str, roles: dict[int, str]) -> list[Block]:
    grid = _grid(v, roles)
    names = list(v.axes)
    est = v.estimate.effects.mean(0).float()
    sig = torch.zeros_like(v.verified)
    significant = v.exact.summary.significant
    for i, coords in enumerate(v.cells):
        sig[_index(grid, coords)] = bool(significant[i])
    exact = exact_grids(v, grid)
    n_cells, n_exact = v.verified.numel(), len(v.cells)
    rows, cols = axis_labels(grid, names[0]), axis_labels(grid, names[1])
    out: list[Block] = [
        Heading(title),
        Heatmap(key, f"{title}: AtP* estimate", est, rows, cols,
                significant=sig, xlabel=names[1], value_label="estimated effect (0 = corrupt, 1 = clean)",
                caption=f"AtP* (attribution with the QK fix) estimate of every cell, mean over prompts; "
                        f"{n_exact} of {n_cells} cells were then patched exactly (the top {n_exact - int(v.sampled.sum())} "
                        f"by AtP* score and {int(v.sampled.sum())} drawn at random); dots: verified cells whose "
                        "exact effect passes Benjamini–Hochberg (q < 0.05, over the verified cells)."),
        Heatmap(f"{key}_exact", f"{title}: exact effect of the verified cells", exact["mean"].float(), rows, cols,
                halfwidth=((exact["high"] - exact["low"]) / 2).float(), significant=sig, xlabel=names[1],
                caption=f"The {n_exact} cells patched exactly: mean effect over prompts (grey: not patched); "
                        "right: CI half-width; dots: q < 0.05 (BH over the verified cells).",
                low=exact["low"], high=exact["high"], p=exact["p"], q=exact["q"]),
        Table(["cell", "AtP* estimate", "exact effect", "95% CI", "p (permutation)", "q (BH)", "chosen"],
              [[r["cell"], r["estimate"], r["effect"], ci_text(r["low"], r["high"]), r["p"], r["q"], r["chosen"]]
               for r in verified_cells(v, roles)]),
    ]
    check = []
    if v.rank_corr is not None:
        ci = "" if v.rank_corr_ci is None else f" {ci_text(v.rank_corr_ci.low, v.rank_corr_ci.high)}"
        check.append(f"On the {int(v.sampled.sum())} random cells, Spearman's ρ between the AtP* score and the "
                     f"exact effect size is {v.rank_corr:.3f}{ci}.")
    if v.missed_max is not None:
        check.append(f"The largest exact effect size among them (cells AtP* ranked below its top) is "
                     f"{v.missed_max:.3f}; with 95% confidence at most {v.missed_exceed} of the {v.n_unverified} "
                     "unpatched cells are larger.")
    if v.missed_bound is not None:
        check.append(f"Conformal bound (per cell, 95%): no unpatched cell's effect size is expected above "
                     f"{v.missed_bound:.3f}.")
    check.append("p and q are over the verified cells only, which AtP* chose on these same prompts: treat q as "
                 "optimistic. `--mode exact` patches every cell.")
    power = power_text(v.exact)
    return out + [Text(" ".join(check), note=True)] + ([Text(power, note=True)] if power else [])
