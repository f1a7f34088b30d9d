"""Where a site lives on the HF modules, and how to read and write it there.

A ``HookPoint`` is a module, a direction ("in": the first input, through a forward pre-hook;
"out": the output, through a forward hook) and a pair of functions between the raw tensor at
that place and the site's activation. ``get`` may return a view; ``put`` builds the new raw
tensor from a new activation without mutating the old one, so autograd stays correct.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn


def _identity(raw: torch.Tensor) -> torch.Tensor:
    return raw


def _replace(raw: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    return new


@dataclass(frozen=True, eq=False)
class HookPoint:
    """A place on an HF module where one site's activation can be read and replaced."""

    module: nn.Module
    direction: str  # "in" or "out"
    out_index: int | None = None  # index into a tuple output; None when the output is a tensor
    get: Callable[[torch.Tensor], torch.Tensor] = field(default=_identity)
    put: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = field(default=_replace)
    head_axis: int = -2  # axis of the heads in get()'s result, for per-head sites
    writable: bool = True
    why_read_only: str = ""

    def __post_init__(self) -> None:
        assert self.direction in ("in", "out"), self.direction


def heads(n_heads: int, d_head: int) -> dict:
    """get/put for a [..., n_heads * d_head] tensor seen as [..., n_heads, d_head]."""
    return {
        "get": lambda raw: raw.unflatten(-1, (n_heads, d_head)),
        "put": lambda raw, new: new.flatten(-2),
    }


def fused_slice(start: int, stop: int, n_heads: int, d_head: int) -> dict:
    """get/put for heads stored in a contiguous slice of a fused projection (GPT-2 c_attn)."""

    def get(raw: torch.Tensor) -> torch.Tensor:
        return raw[..., start:stop].unflatten(-1, (n_heads, d_head))

    def put(raw: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.cat([raw[..., :start], new.flatten(-2), raw[..., stop:]], dim=-1)

    return {"get": get, "put": put}


def interleaved(which: int, parts: int, n_heads: int, d_head: int) -> dict:
    """get/put for a fused projection laid out [..., n_heads, parts * d_head] (GPT-NeoX qkv)."""

    def get(raw: torch.Tensor) -> torch.Tensor:
        return raw.unflatten(-1, (n_heads, parts * d_head))[..., which * d_head : (which + 1) * d_head]

    def put(raw: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        grouped = raw.unflatten(-1, (n_heads, parts * d_head))
        pieces = list(grouped.split(d_head, dim=-1))
        pieces[which] = new
        return torch.cat(pieces, dim=-1).flatten(-2)

    return {"get": get, "put": put}
