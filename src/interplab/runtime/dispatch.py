"""Hook bookkeeping: one torch hook per (module, direction, output index), many entries on it.

Nothing attached means no torch hook at all, so a bare forward is the plain HF forward.
Entries run in (priority, order of attachment). Every attachment returns a handle whose
``remove`` is idempotent; callers remove in ``finally`` so a raising forward leaves nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from interplab.models.hookpoint import HookPoint

# Entry priorities on one hook point.
FIX = -10  # rebuild a block output after a resid_mid write (must run first)
INTERVENE = 0
CACHE = 10
GRAD = 20
STASH = 100  # read the final value of a tensor after everything else

RawFn = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass
class _Slot:
    module: nn.Module
    direction: str
    out_index: int | None
    handle: object = None
    entries: list = field(default_factory=list)  # [(priority, order, fn)]

    def run(self, raw: torch.Tensor) -> torch.Tensor:
        for _, _, fn in self.entries:
            new = fn(raw)
            if new is not None:
                raw = new
        return raw


class Dispatcher:
    """Owns every torch hook interplab puts on a model."""

    def __init__(self) -> None:
        self._slots: dict[tuple[int, str, int | None], _Slot] = {}
        self._order = itertools.count()

    @property
    def n_torch_hooks(self) -> int:
        return len(self._slots)

    def add(self, point: HookPoint, fn: RawFn, priority: int = INTERVENE) -> _Handle:
        key = (id(point.module), point.direction, point.out_index)
        slot = self._slots.get(key)
        if slot is None:
            slot = _Slot(point.module, point.direction, point.out_index)
            slot.handle = self._install(slot)
            self._slots[key] = slot
        entry = (priority, next(self._order), fn)
        slot.entries.append(entry)
        slot.entries.sort(key=lambda e: (e[0], e[1]))
        return _Handle(self, key, entry)

    def _remove(self, key, entry) -> None:
        slot = self._slots.get(key)
        if slot is None or entry not in slot.entries:
            return
        slot.entries.remove(entry)
        if not slot.entries:
            slot.handle.remove()
            del self._slots[key]

    def clear(self) -> None:
        for slot in self._slots.values():
            slot.handle.remove()
        self._slots.clear()

    @staticmethod
    def _install(slot: _Slot):
        if slot.direction == "in":

            def pre_hook(module, args, kwargs):
                if args:
                    new = slot.run(args[0])
                    return (new, *args[1:]), kwargs
                name = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                kwargs = dict(kwargs)
                kwargs[name] = slot.run(kwargs[name])
                return args, kwargs

            return slot.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

        def hook(module, args, output):
            if slot.out_index is None:
                return slot.run(output)
            raw = output[slot.out_index]
            if raw is None:
                raise RuntimeError(
                    "This hook point produced no tensor (attention patterns need the model "
                    "loaded with attn_implementation='eager')."
                )
            new = slot.run(raw)
            if new is raw:
                return output
            items = list(output)
            items[slot.out_index] = new
            return type(output)(items) if isinstance(output, tuple) else items

        return slot.module.register_forward_hook(hook)


class _Handle:
    def __init__(self, dispatcher: Dispatcher, key, entry) -> None:
        self._dispatcher, self._key, self._entry = dispatcher, key, entry

    def remove(self) -> None:
        self._dispatcher._remove(self._key, self._entry)
