"""Interventions on a ``HookedModule`` site: Set, Ablate, Add, Patch, Identity.

Each names a ``site`` and, optionally, ``items`` (graphs / batch items) and ``rows`` local to
each item; ``__call__(act, rows)`` gets the site's activation and its ``RowIndex`` and returns
the new activation. Writes never touch a tensor autograd may need: the activation is cloned and
the clone written, so gradients keep flowing through the rows left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from interplab.core.errors import InterventionError, choices
from interplab.runtime.generic_sites import RowIndex, as_index_list


def _normalise(op) -> None:
    object.__setattr__(op, "items", as_index_list(op.items, f"{type(op).__name__}.items"))
    object.__setattr__(op, "rows", as_index_list(op.rows, f"{type(op).__name__}.rows"))
    if not isinstance(op.site, str):
        raise InterventionError(f"{type(op).__name__}.site must be a site name (str), got {op.site!r}.")


def _addressed(op, act: torch.Tensor, rows: RowIndex):
    """(global row indices or None for all rows, how many rows that is)."""
    idx = rows.index(op.items, op.rows)
    return idx, (rows.n_rows if idx is None else int(idx.shape[0]))


def _write(act: torch.Tensor, idx, value: torch.Tensor) -> torch.Tensor:
    value = value.to(dtype=act.dtype, device=act.device)
    if idx is None:
        return value.expand_as(act).clone()
    new = act.clone()
    new[idx] = value
    return new


def _check_value(op, what: str, value: torch.Tensor, act: torch.Tensor, n: int) -> None:
    want = (n, *act.shape[1:])
    if tuple(value.shape) != want:
        raise InterventionError(
            f"{type(op).__name__} at site {op.site!r}: the {what} has shape {tuple(value.shape)} but "
            f"the addressed rows have shape {want} ({n} rows of {tuple(act.shape[1:])})."
        )


@dataclass(frozen=True, eq=False)
class Set:
    """Replace the addressed rows by ``value`` ([n_addressed_rows, ...])."""

    site: str
    value: torch.Tensor
    items: tuple | None = None
    rows: tuple | None = None

    def __post_init__(self) -> None:
        _normalise(self)

    def __call__(self, act: torch.Tensor, rows: RowIndex) -> torch.Tensor:
        idx, n = _addressed(self, act, rows)
        value = torch.as_tensor(self.value)
        _check_value(self, "value", value, act, n)
        return _write(act, idx, value)


@dataclass(frozen=True, eq=False)
class Ablate:
    """Set the addressed rows to a constant, or ``value="mean"``: the mean over every row of
    this forward's activation at the site (as it arrives there)."""

    site: str
    items: tuple | None = None
    rows: tuple | None = None
    value: float | str = 0.0

    def __post_init__(self) -> None:
        _normalise(self)
        ok = self.value == "mean" if isinstance(self.value, str) else \
            isinstance(self.value, int | float) and not isinstance(self.value, bool)
        if not ok:
            raise InterventionError(
                f"Ablate.value must be a number or 'mean', got {self.value!r}."
            )

    def __call__(self, act: torch.Tensor, rows: RowIndex) -> torch.Tensor:
        idx, n = _addressed(self, act, rows)
        if self.value == "mean":
            if not act.is_floating_point():
                raise InterventionError(f"Ablate(value='mean') at site {self.site!r}: the activation "
                                        f"is {act.dtype}, which has no mean.")
            fill = act.mean(0, keepdim=True).expand(n, *act.shape[1:])
        else:
            fill = torch.full((n, *act.shape[1:]), float(self.value), dtype=act.dtype, device=act.device)
        return _write(act, idx, fill)


@dataclass(frozen=True, eq=False)
class Add:
    """Add ``scale * vector`` to the addressed rows (``vector`` broadcasts over them)."""

    site: str
    vector: torch.Tensor
    scale: float = 1.0
    items: tuple | None = None
    rows: tuple | None = None

    def __post_init__(self) -> None:
        _normalise(self)

    def __call__(self, act: torch.Tensor, rows: RowIndex) -> torch.Tensor:
        idx, n = _addressed(self, act, rows)
        vec = torch.as_tensor(self.vector).to(dtype=act.dtype, device=act.device)
        target = (n, *act.shape[1:])
        try:
            ok = torch.broadcast_shapes(vec.shape, target) == target
        except RuntimeError:
            ok = False
        if not ok:
            raise InterventionError(
                f"Add at site {self.site!r}: a vector of shape {tuple(vec.shape)} does not broadcast "
                f"over the addressed rows of shape {target} (give {tuple(act.shape[1:])} or "
                "a shape that broadcasts to it)."
            )
        delta = self.scale * vec
        if idx is None:
            return act + delta
        new = act.clone()
        new[idx] = act[idx] + delta
        return new


@dataclass(frozen=True, eq=False)
class Patch:
    """Set the addressed rows from ``source``: a cache from ``run_with_cache(..., items=<the same
    items>)`` of another run (or that tensor itself). Its rows are the addressed rows in order;
    with ``rows`` given it may also hold every row of the items, and the same local rows are
    taken from each item's block."""

    site: str
    source: Mapping | torch.Tensor
    items: tuple | None = None
    rows: tuple | None = None

    def __post_init__(self) -> None:
        _normalise(self)
        if isinstance(self.source, Mapping) and self.site not in self.source:
            raise InterventionError(
                f"Patch at site {self.site!r}: the source cache has no {self.site!r} (it has "
                f"{choices(self.source) or 'nothing'}); cache that site in the source run."
            )
        if not isinstance(self.source, Mapping | torch.Tensor):
            raise InterventionError(
                f"Patch.source must be a cache dict from run_with_cache or a tensor, got "
                f"{type(self.source).__name__}."
            )

    def __call__(self, act: torch.Tensor, rows: RowIndex) -> torch.Tensor:
        src = self.source[self.site] if isinstance(self.source, Mapping) else self.source
        idx, n = _addressed(self, act, rows)
        if src.shape[0] != n and self.rows is not None and src.ndim == act.ndim \
                and src.shape[0] == rows.count(self.items):
            src = src[self._local(rows).to(src.device)]
        if src.shape[0] != n:
            raise InterventionError(
                f"Patch at site {self.site!r}: the source has {src.shape[0]} rows but {n} rows are "
                "addressed here; cache the source with items= the same items (same-sized items)."
            )
        _check_value(self, "source", src, act, n)
        return _write(act, idx, src)

    def _local(self, rows: RowIndex) -> torch.Tensor:
        """Positions of the addressed local rows inside a source holding whole items."""
        items = range(rows.n_items) if self.items is None else self.items
        picks, offset = [], 0
        local = torch.as_tensor(list(self.rows), dtype=torch.long)
        for item in items:
            picks.append(offset + local)
            offset += int(rows.item_rows(item).shape[0])
        return torch.cat(picks) if picks else local[:0]


@dataclass(frozen=True, eq=False)
class Identity:
    """Write the activation back unchanged (a copy): for tests of the write path."""

    site: str

    def __call__(self, act: torch.Tensor, rows: RowIndex) -> torch.Tensor:
        return act.clone()
