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
        if _item_type(kind) is not None:
            typ = _sequence_parser(_item_type(kind))
            help_text += " (comma-separated)"
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


def _item_type(kind):
    """The item type of a tuple[X, ...] / list[X] field (None for other fields)."""
    origin = typing.get_origin(kind)
    if origin not in (tuple, list) and kind not in (tuple, list):
        return None
    args = [a for a in typing.get_args(kind) if a is not Ellipsis]
    return args[0] if args else str


def _sequence_parser(item):
    def parse(text: str):
        return tuple(item(part.strip()) for part in text.split(",") if part.strip())
    parse.__name__ = f"comma-separated {getattr(item, '__name__', 'value')}s"
    return parse


def config_from_args(cls, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(namespace).items() if k in names})
