"""The torch hooks of one ``HookedModule`` call: one per (module, kind), removed in ``finally``.

A *slot* is one torch hook: a forward hook for ``output`` / ``output[i]`` sites, a forward
pre-hook for ``input[i]``, a torch_geometric message hook for ``message`` (plus a propagate
pre-hook that records the ``edge_index`` the messages follow). Each slot counts the calls of
its module in this forward; a site acts on the call its ``SiteSpec.call`` names (the first
when None), and ``verify`` afterwards checks that it ran exactly that often. Entries on a site
run in (priority, order of attachment); each gets the site's activation and a ``RowIndex`` and
returns a replacement or None. A replacement is written back where the tensor came from.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from interplab.core.errors import InterventionError, SiteError
from interplab.runtime.generic_sites import RowIndex, SiteSpec

# Entry priorities on one site.
INTERVENE = 0
CACHE = 10
GRAD = 20

Entry = Callable[[torch.Tensor, RowIndex], torch.Tensor | None]
RowsFor = Callable[[str, SiteSpec, torch.Tensor, torch.Tensor | None], RowIndex]


def where(spec: SiteSpec) -> str:
    return f"{spec.path or '<root module>'} {spec.tensor}"


@dataclass
class _Tap:
    name: str
    spec: SiteSpec
    entries: list = field(default_factory=list)  # [(priority, order, fn)]

    def fires(self, call: int) -> bool:
        return call == (self.spec.call or 0)


@dataclass
class _Slot:
    module: nn.Module
    kind: str
    taps: dict = field(default_factory=dict)  # name -> _Tap
    calls: int = 0
    edge_index: torch.Tensor | None = None


class CallHooks:
    """Every hook of one call. ``install`` then the forward then ``verify``; ``remove`` in finally."""

    def __init__(self, rows_for: RowsFor) -> None:
        self._rows_for = rows_for
        self._slots: dict[tuple[int, str], _Slot] = {}
        self._order = itertools.count()
        self.handles: list = []

    def add(self, name: str, spec: SiteSpec, module: nn.Module, fn: Entry, priority: int) -> None:
        key = (id(module), spec.kind)
        slot = self._slots.setdefault(key, _Slot(module, spec.kind))
        tap = slot.taps.setdefault(name, _Tap(name, spec))
        tap.entries.append((priority, next(self._order), fn))
        tap.entries.sort(key=lambda e: (e[0], e[1]))

    # -- install / remove ------------------------------------------------------------------------
    def install(self) -> None:
        for slot in self._slots.values():
            if slot.kind == "out":
                self.handles.append(slot.module.register_forward_hook(self._out_hook(slot)))
            elif slot.kind == "in":
                self.handles.append(slot.module.register_forward_pre_hook(self._in_hook(slot)))
            else:
                if any(t.spec.graph for t in slot.taps.values()):
                    self.handles.append(
                        slot.module.register_propagate_forward_pre_hook(self._edges_hook(slot)))
                self.handles.append(slot.module.register_message_forward_hook(self._message_hook(slot)))

    def remove(self) -> None:
        while self.handles:
            self.handles.pop().remove()

    @property
    def n_hooks(self) -> int:
        return len(self.handles)

    # -- after the forward -----------------------------------------------------------------------
    def verify(self) -> None:
        """Every site ran as its ``call`` says (exactly once when None)."""
        for slot in self._slots.values():
            n = slot.calls
            for tap in slot.taps.values():
                spec, what = tap.spec, where(tap.spec)
                ran = f"{spec.path or '<root module>'}{'.message()' if spec.kind == 'message' else ''}"
                if n == 0:
                    why = (" (a fused sparse propagate never calls message(); pass edge_index as a "
                           "[2, E] tensor)" if spec.kind == "message" else "")
                    raise SiteError(f"Site {tap.name!r} ({what}) did not run in this forward{why}.")
                if spec.call is None and n > 1:
                    raise SiteError(
                        f"{ran} ran {n} times in this forward: give SiteSpec(call=...) (0..{n - 1}) "
                        f"for site {tap.name!r}."
                    )
                if spec.call is not None and spec.call >= n:
                    raise SiteError(
                        f"Site {tap.name!r} asks for call {spec.call} of {ran}, which ran {n} "
                        f"time{'s' if n != 1 else ''} in this forward (calls 0..{n - 1})."
                    )

    # -- the hooks -------------------------------------------------------------------------------
    def _process(self, slot: _Slot, tap: _Tap, act) -> torch.Tensor:
        if not isinstance(act, torch.Tensor):
            raise SiteError(
                f"Site {tap.name!r} ({where(tap.spec)}) is a {type(act).__name__}, not a tensor"
                + (f" (a {len(act)}-tuple: give tensor='output[i]')" if isinstance(act, tuple | list)
                   else "") + "."
            )
        rows = self._rows_for(tap.name, tap.spec, act, slot.edge_index)
        for _, _, fn in tap.entries:
            new = fn(act, rows)
            if new is None or new is act:
                continue
            if not isinstance(new, torch.Tensor) or new.shape != act.shape:
                raise InterventionError(
                    f"An intervention at site {tap.name!r} returned "
                    f"{tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__}; "
                    f"it must return a tensor of the site's shape {tuple(act.shape)}."
                )
            act = new
        return act

    def _firing(self, slot: _Slot):
        call = slot.calls
        slot.calls += 1
        return [t for t in slot.taps.values() if t.fires(call)]

    def _out_hook(self, slot: _Slot):
        def hook(module, args, output):
            for tap in self._firing(slot):
                i = tap.spec.index
                if i is None:
                    output = self._process(slot, tap, output)
                    continue
                if not isinstance(output, tuple | list) or not -len(output) <= i < len(output):
                    n = f"a {len(output)}-tuple" if isinstance(output, tuple | list) else type(output).__name__
                    raise SiteError(f"Site {tap.name!r} ({where(tap.spec)}): the output is {n}, "
                                    f"which has no element {i}.")
                old = output[i]
                new = self._process(slot, tap, old)
                if new is not old:
                    output = _replaced(output, i, new)
            return output
        return hook

    def _in_hook(self, slot: _Slot):
        def hook(module, args):
            changed = False
            for tap in self._firing(slot):
                i = tap.spec.index
                if i >= len(args):
                    raise SiteError(
                        f"Site {tap.name!r} ({where(tap.spec)}): the module got {len(args)} positional "
                        f"input{'s' if len(args) != 1 else ''} (keyword inputs are not sites)."
                    )
                new = self._process(slot, tap, args[i])
                if new is not args[i]:
                    args, changed = _replaced(args, i, new), True
            return args if changed else None
        return hook

    def _message_hook(self, slot: _Slot):
        def hook(module, inputs, out):
            for tap in self._firing(slot):
                out = self._process(slot, tap, out)
            return out
        return hook

    @staticmethod
    def _edges_hook(slot: _Slot):
        def hook(module, inputs):
            edge_index = inputs[0]
            slot.edge_index = edge_index if isinstance(edge_index, torch.Tensor) and not \
                edge_index.is_sparse and edge_index.ndim == 2 else None
        return hook


def _replaced(seq, i: int, new):
    items = list(seq)
    items[i] = new
    if isinstance(seq, list):
        return items
    make = getattr(type(seq), "_make", None)  # namedtuple
    return make(items) if make is not None else type(seq)(items)
