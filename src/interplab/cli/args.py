"""Generate argparse options from a config dataclass (DESIGN rule 6).

Options are parsed as strings and converted by ``core.config.build_config``, the one place that
turns untyped values (CLI, config files, HTTP) into typed configs; help text comes from the
fields' docstrings, their declared ranges and choices, and their defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from interplab.core.config import build_config


def _fmt_default(value) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) if value else "none"
    return str(value)


def field_help(f) -> str:
    text = f.metadata.get("help", "")
    m = f.metadata
    rules = [f"{op} {m[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in m]
    if "choices" in m:
        rules.append("one of " + ", ".join(map(str, m["choices"])))
    if rules:
        text += f" [{'; '.join(rules)}]"
    return text


def add_config_args(parser: argparse.ArgumentParser, cls, positional: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        help_text = field_help(f).replace("%", "%%")  # argparse formats help with %
        kind = hints[f.name]
        origin = typing.get_origin(kind)
        if origin in (tuple, list) or kind in (tuple, list):
            help_text += " (comma-separated)"
        if f.name in positional:
            parser.add_argument(f.name, help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        parser.add_argument(flag, default=default, required=required, metavar=f.name.upper(),
                            help=f"{help_text} (default: {_fmt_default(default)})")


def config_from_args(cls, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return build_config(cls, {k: v for k, v in vars(namespace).items() if k in names}, "the options")
