"""Generate argparse options from a config dataclass (DESIGN rule 6).

A config class is first described as plain data (``field_specs``: name, kind, help, default,
required) — the CLI's catalogue caches these so a subcommand's ``--help`` and a mistyped option
answer without importing the analysis — and options are added from that description. Values are
parsed as strings and converted by ``core.config.build_config``, the one place that turns untyped
values (CLI, config files, HTTP) into typed configs. Options not given are left out, so the
config's own defaults apply.
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


def field_specs(cls) -> list[dict]:
    """Each init field of ``cls`` as JSON-able data: what the parser needs to know."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        kind = hints[f.name]
        origin = typing.get_origin(kind)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        spec = {"name": f.name, "help": field_help(f), "required": required,
                "kind": "bool" if kind is bool else "list" if origin in (tuple, list) or kind in (tuple, list) else "value"}
        spec["default"] = default if spec["kind"] == "bool" else _fmt_default(default)
        if f.metadata.get("alias"):
            spec["alias"] = f.metadata["alias"]
        specs.append(spec)
    return specs


def add_spec_args(parser: argparse.ArgumentParser, specs: list[dict], positional: tuple[str, ...] = ()) -> None:
    for spec in specs:
        name = spec["name"]
        help_text = spec["help"].replace("%", "%%")  # argparse formats help with %
        if spec["kind"] == "list":
            help_text += " (comma-separated)"
        if name in positional:
            parser.add_argument(name, help=help_text)
            continue
        flags = ["--" + name.replace("_", "-")]
        if spec.get("alias"):
            flags.append("--" + spec["alias"].replace("_", "-"))
        if spec["kind"] == "bool":
            parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=f"{help_text} (default: {spec['default']})")
        elif spec["required"]:
            parser.add_argument(*flags, dest=name, required=True, metavar=name.upper(), help=help_text)
        else:
            parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS, metavar=name.upper(),
                                help=f"{help_text} (default: {spec['default']})")


def add_config_args(parser: argparse.ArgumentParser, cls, positional: tuple[str, ...] = ()) -> None:
    add_spec_args(parser, field_specs(cls), positional)


def config_from_args(cls, namespace: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return build_config(cls, {k: v for k, v in vars(namespace).items() if k in names}, "the options")
