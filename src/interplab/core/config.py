"""Config base: frozen dataclasses whose fields carry their own help text and range checks.

``param(default, help=..., ge=1, choices=(...))`` declares a field; the CLI is generated from
the fields (``interplab.cli.args``), the declared ranges and choices are checked in one place
(``check_fields``, run by every config composed with ``RunFields``), cross-field checks live in
``__post_init__``, and nothing mutates a config after construction.

Run configs are *composed*, not copied: ``RunFields`` (model, seed, out, threads, device, dtype;
or ``RecordFields``, just seed, out and threads, for analyses without a model) and
``TaskFields`` (task, n) are declared once and mixed into each registered analysis's config
together with the library config of the technique (e.g. ``PatchingConfig``), so a default
lives in exactly one place. Where a run derives some of a library config's fields itself,
``fields_of(LibraryConfig, exclude=(...))`` gives a mixin with the others (their defaults, help
and checks are the library's own).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from interplab.core.errors import ConfigError, did_you_mean
from interplab.core.errors import choices as fmt_choices
from interplab.core.threads import parse_threads

_CHECKS = ("ge", "gt", "le", "lt", "choices")


def param(default: Any = dataclasses.MISSING, help: str = "", *, ge=None, gt=None, le=None, lt=None,
          choices=None, alias: str | None = None, **kw) -> Any:
    """A config field with its docstring (shown by ``--help``) and declared range checks;
    ``alias``: another command-line name for it (e.g. ``--suite`` for ``--suites``)."""
    meta = {"help": help}
    if alias is not None:
        meta["alias"] = alias
    for key, value in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", choices)):
        if value is not None:
            meta[key] = tuple(value) if key == "choices" else value
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def check_fields(config) -> None:
    """Check every field's declared range / choices; the error names the field and the rule."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        m = f.metadata
        if not any(k in m for k in _CHECKS) or value is None:
            continue
        if "choices" in m and value not in m["choices"]:
            raise ConfigError(f"{f.name}={value!r} is not one of {fmt_choices(m['choices'])}.")
        for key, op, ok in (("ge", ">=", lambda v, b: v >= b), ("gt", ">", lambda v, b: v > b),
                            ("le", "<=", lambda v, b: v <= b), ("lt", "<", lambda v, b: v < b)):
            if key in m and not ok(value, m[key]):
                raise ConfigError(f"{f.name} must be {op} {m[key]}, got {value}.")


def _chain_post_init(self, cls) -> None:
    parent = getattr(super(cls, self), "__post_init__", None)
    if parent is not None:
        parent()


def check_device(device: str) -> None:
    """``device`` names a device this machine has (checked before any work)."""
    if not (device in ("cpu", "cuda", "auto") or device.startswith("cuda:")):
        raise ConfigError(f"device={device!r}: use cpu, cuda or cuda:N (or auto).")
    if device.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device and device.split(":")[1].isdigit() else 0
        if ":" in device and not device.split(":")[1].isdigit():
            raise ConfigError(f"device={device!r}: the index after cuda: must be a number.")
        if index >= n:
            have = "no CUDA device" if n == 0 else f"{n} CUDA device(s)"
            raise ConfigError(f"device={device!r} but this machine has {have} (torch {torch.__version__}); "
                              "use --device cpu.")


@dataclass(frozen=True)
class RecordFields:
    """The fields of every run record: where it goes, the seed of everything random and the
    number of CPU threads torch computes with (every analysis runs torch work)."""

    seed: int = param(0, help="Seed of the data, noise, splits and statistics.")
    out: str = param("runs", help="Directory under which the run record is written.")
    # Set for the run only (runs.runner), the caller's count restored after.
    threads: str = param("auto", help="CPU threads torch computes with: auto (the CPUs this process may really "
                         "use: its affinity set in physical cores, capped by a cgroup CPU quota; "
                         "OMP_NUM_THREADS when set) or a number.")

    def __post_init__(self) -> None:
        check_fields(self)
        parse_threads(self.threads)
        _chain_post_init(self, RecordFields)


@dataclass(frozen=True)
class RunFields(RecordFields):
    """The fields every run on a model shares (composed into each registered analysis's config)."""

    model: str = param("smollm2-135m", help="Model name, local directory, GGUF file or hub id.")
    device: str = param("cpu", help="Device the model runs on: cpu, cuda or cuda:N.")
    dtype: str = param("float32", help="Model dtype.", choices=("float32", "bfloat16", "float16"))

    def __post_init__(self) -> None:
        check_device(self.device)
        _chain_post_init(self, RunFields)


@dataclass(frozen=True)
class TaskFields:
    """A registered task and how many of its prompts a run uses."""

    task: str = param("ioi", help="Registered task (ioi, greater_than, induction, facts, sva).")
    n: int = param(8, help="Number of clean/corrupt pairs (one template and length).", ge=1, le=10_000)

    def __post_init__(self) -> None:
        _chain_post_init(self, TaskFields)


# ---------------------------------------------------------------------------------------------
# Composing a run config from a library config's fields without copying them.

def fields_of(cls: type, *, exclude: tuple[str, ...] = (), help: dict[str, str] | None = None,
              name: str | None = None) -> type:
    """A frozen dataclass mixin with the fields of ``cls`` except ``exclude``; ``help``
    rewords a field's help where the run gives it a meaning of its own (never its default)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((set(exclude) | set(help or {})) - names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no fields {unknown}.")
    hints = typing.get_type_hints(cls)
    specs = [(f.name, hints[f.name], field_of(cls, f.name, (help or {}).get(f.name)))
             for f in dataclasses.fields(cls) if f.name not in exclude and f.init]
    mixin = dataclasses.make_dataclass(name or f"{cls.__name__}Fields", specs, frozen=True,
                                       namespace={"__module__": __name__})
    mixin.__doc__ = f"The fields of {cls.__name__} (composed, not copied), less {', '.join(exclude) or 'none'}."
    return mixin


def field_of(cls: type, name: str, help: str | None = None):
    """Field ``name`` of the dataclass ``cls`` (its default and declared checks), to re-declare
    in a run config where only its help changes; ``help`` rewords it."""
    f = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    if f is None:
        raise TypeError(f"{cls.__name__} has no field {name!r}.")
    meta = dict(f.metadata) | ({"help": help} if help else {})
    default = ({"default": f.default} if f.default is not dataclasses.MISSING
               else {"default_factory": f.default_factory})
    return dataclasses.field(metadata=meta, **default)


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


# ---------------------------------------------------------------------------------------------
# Building a config from untyped values (CLI strings, YAML / JSON, HTTP bodies), in one place.

def build_config(cls, data: dict, where: str = "config"):
    """``cls(**data)`` with every value converted to its field's declared type; unknown
    fields and values of the wrong type are errors naming the field (and a close match)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"Unknown fields {unknown} in {where}.{did_you_mean(unknown[0], fields)} "
                          f"Valid: {sorted(fields)}.")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where} lacks the required field {missing[0]!r}: "
                          f"{fields[missing[0]].metadata.get('help', '')}")
    values = {k: convert(v, hints[k], k) for k, v in data.items()}
    return cls(**values)


def convert(value, kind, name: str):
    """One value converted to ``kind`` (str, int, float, bool, tuple[X, ...], optionals)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], name) if len(inner) == 1 else value
    if origin in (tuple, list) or kind in (tuple, list):
        item = next((a for a in args if a is not Ellipsis), str)
        if isinstance(value, str):
            value = [p.strip() for p in value.split(",") if p.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(convert(v, item, name) for v in value)
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if math.isfinite(number):
                return number
            bad = number
        if kind is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
        raise ConfigError(f"{name} must be {what}, got {value!r}.") from None
    if kind is float:
        raise ConfigError(f"{name} must be a finite number, got {bad}.")
    return value
