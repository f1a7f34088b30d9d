"""Compose a run config from a library config's fields without copying them.

``fields_of(TrainConfig, exclude=("out_dir",))`` is a frozen dataclass mixin holding the
library config's fields themselves (their defaults, help and declared checks), less the ones
the run derives. A run config inherits it next to ``RunFields``, so every default lives in
exactly one place: the library's. (Generic; it belongs in ``core.config`` next to ``RunFields``
and is kept here only because this layer is where it is first used.)
"""

from __future__ import annotations

import dataclasses
import typing


def fields_of(cls: type, *, exclude: tuple[str, ...] = (), help: dict[str, str] | None = None,
              name: str | None = None) -> type:
    """A frozen dataclass mixin with the fields of ``cls`` except ``exclude``; ``help``
    rewords a field's help where the run gives it a meaning of its own (never its default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((set(exclude) | set(help or {})) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}.")
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        meta = dict(f.metadata)
        if help and f.name in help:
            meta["help"] = help[f.name]
        default = ({"default": f.default} if f.default is not dataclasses.MISSING
                   else {"default_factory": f.default_factory})
        specs.append((f.name, hints[f.name], dataclasses.field(metadata=meta, **default)))
    mixin = dataclasses.make_dataclass(name or f"{cls.__name__}Fields", specs, frozen=True,
                                       namespace={"__module__": __name__})
    mixin.__doc__ = f"The fields of {cls.__name__} (composed, not copied), less {', '.join(exclude) or 'none'}."
    return mixin
