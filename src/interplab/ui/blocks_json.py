"""Report blocks (``core.blocks``) as JSON for the browser: the same specs the static report
draws, with tensors as nested lists and non-finite numbers as null. The browser draws them
(``static/figures.js``); nothing here computes a number of its own."""

from __future__ import annotations

import dataclasses
import math

import torch

from interplab.core.blocks import Bars, Graph, Heading, Heatmap, Lines, Scatter, Table, Text

KINDS = {Heading: "heading", Text: "text", Table: "table", Heatmap: "heatmap", Scatter: "scatter",
         Lines: "lines", Bars: "bars", Graph: "graph"}


def plain(value):
    """A JSON-safe copy: tensors to lists, NaN / inf to None, tuples to lists."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bool:
            return value.tolist()
        return plain(value.double().tolist() if value.is_floating_point() else value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, int | str | bool) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item())
    return str(value)


def block_json(block) -> dict:
    kind = KINDS.get(type(block))
    if kind is None:
        raise TypeError(f"not a report block: {type(block).__name__}")
    out = {"type": kind}
    for f in dataclasses.fields(block):
        out[f.name] = plain(getattr(block, f.name))
    return out


def blocks_json(blocks) -> list[dict]:
    return [block_json(b) for b in blocks]
