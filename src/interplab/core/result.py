"""Result types: how every analysis's result writes itself into a run record, reads itself
back, and describes its report.

A result is a dataclass that mixes in ``Result``. ``headline()`` gives the numbers a reader
wants first (written to ``results.json["headline"]``, printed by the CLI); ``blocks()`` gives
the report as data (``core.blocks``). ``encode`` / ``decode`` turn any such dataclass into
JSON plus a dict of tensors and back, exactly: tensors go to safetensors under their dotted
field path, everything else to JSON. Decoding only builds dataclasses defined inside
interplab, and never runs code from the record.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import Any, ClassVar

import torch

from interplab.core.blocks import Block, Table
from interplab.core.errors import InputError


class Result:
    """Mixin for result dataclasses (see the module docstring)."""

    # Fields whose own fields are stored at this result's prefix (e.g. a summary's mean/low/high
    # as ``patch_heads.mean``), so the record's tensor names stay short.
    record_inline: ClassVar[tuple[str, ...]] = ()

    def title(self) -> str:
        """The report's title."""
        return type(self).__name__

    def headline(self) -> dict[str, Any]:
        return {}

    def blocks(self) -> list[Block]:
        return []

    def terminal(self) -> list[Block]:
        """What the CLI prints: by default the headline numbers as a table."""
        h = self.headline()
        return [Table(["headline", "value"], [[k, _short(v)] for k, v in h.items()])] if h else []


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# encoding

def encode(obj, tensors: dict[str, torch.Tensor], prefix: str = ""):
    """JSON-able tree of ``obj``; tensors are put in ``tensors`` under dotted keys."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "value"
        if key in tensors:
            raise InputError(f"Two tensors would be stored as {key!r}.")
        value = obj.detach().cpu().contiguous()
        storage = value.untyped_storage().data_ptr()
        if any(t.untyped_storage().data_ptr() == storage for t in tensors.values()):
            value = value.clone()  # safetensors refuses two names for one storage
        tensors[key] = value
        return {"__tensor__": key}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        out: dict = {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}"}
        inline = getattr(cls, "record_inline", ())
        for f in dataclasses.fields(obj):
            sub = prefix if f.name in inline else _join(prefix, f.name)
            out[f.name] = encode(getattr(obj, f.name), tensors, sub)
        return out
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            if any(k.startswith("__") for k in obj):
                return {"__items__": [[k, encode(v, tensors, _join(prefix, k))] for k, v in obj.items()]}
            return {k: encode(v, tensors, _join(prefix, k)) for k, v in obj.items()}
        return {"__items__": [[encode(k, tensors, prefix), encode(v, tensors, _join(prefix, str(k)))]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, _join(prefix, str(i))) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, _join(prefix, str(i))) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if isinstance(obj, Path):
        return {"__path__": str(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalars
        return obj.item()
    raise InputError(f"Cannot store a {type(obj).__name__} at {prefix or 'the top'} of a result: results "
                     "hold tensors, numbers, strings, lists, dicts and dataclasses only.")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def decode(tree, tensors: dict[str, torch.Tensor], allow: tuple[type, ...] = ()):
    """Inverse of ``encode``; refuses classes from outside interplab (unless passed in ``allow``)."""
    if isinstance(tree, list):
        return [decode(v, tensors, allow) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__tuple__" in tree:
        return tuple(decode(v, tensors, allow) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {decode(k, tensors, allow) if not isinstance(k, str) else k: decode(v, tensors, allow) for k, v in tree["__items__"]}
    if "__float__" in tree:
        return float(tree["__float__"])
    if "__path__" in tree:
        return Path(tree["__path__"])
    if "__dataclass__" in tree:
        named = {f"{c.__module__}:{c.__qualname__}": c for c in allow}
        cls = named.get(tree["__dataclass__"]) or result_class(tree["__dataclass__"])
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in tree:
                object.__setattr__(obj, f.name, decode(tree[f.name], tensors, allow))
        return obj
    return {k: decode(v, tensors, allow) for k, v in tree.items()}


def result_class(name: str) -> type:
    """The dataclass named ``module:qualname``, only if it is defined inside interplab."""
    module, _, qual = name.partition(":")
    if not module.startswith("interplab.") or not qual:
        raise InputError(f"A run record names the type {name!r}, which is not an interplab result type.")
    obj: Any = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise InputError(f"A run record names {name!r}, which is not a dataclass of interplab.")
    return obj


def equal(a, b) -> bool:
    """Deep equality of decoded results (tensors compared exactly, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a.nan_to_num(), b.nan_to_num())))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(equal(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
