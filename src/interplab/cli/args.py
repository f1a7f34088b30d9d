"""Generate argparse options from a config dataclass (DESIGN rule 6)."""

from __future__ import annotations

import argparse
import dataclasses
import typing


def add_config_args(parser: argparse.ArgumentParser, cls, positional: tuple[str, ...] = ()) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        help_text = f.metadata.get("help", "")
        kind = hints[f.name]
        typ = kind if kind in (int, float, str) else str
        if f.name in positional:
            parser.add_argument(f.name, type=typ, help=help_text)
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            parser.add_argument(flag, type=typ, default=default,
                                required=default is None, help=f"{help_text} (default: {default})")


def config_from_args(cls, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})
