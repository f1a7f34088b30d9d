"""The ``interplab`` command, generated from the analysis registry.

Every registered analysis is a subcommand of the same name whose options are its config's
fields; ``interplab run CONFIG`` runs the same analyses from a file; ``interplab run --list``
shows every analysis with its fields. The parser is built from the cached catalogue (``cli.catalog``), so
``--help`` and a mistyped subcommand or option answer before torch is imported.
Errors a user can trigger print as one clear message (exit 2), not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys

from interplab.cli import serve, ui
from interplab.core.errors import closest

META = {"run": "run any analysis from a YAML/JSON config file (--list: every analysis and its fields)",
        "models": "list default and cached models", "serve": serve.HELP,
        "ui": ui.HELP}
DESCRIPTION = "interplab: exact, fast, honest interpretability on Hugging Face LMs."


class Parser(argparse.ArgumentParser):
    """argparse that suggests the closest option or subcommand for a mistyped one (and never
    takes a prefix of an option for the option)."""

    def __init__(self, *args, **kw) -> None:
        kw["allow_abbrev"] = False
        super().__init__(*args, **kw)
        # "-1,0,1", "-2.5e-3" and "-inf" are values (list options take negative numbers), not
        # options; "-inf" then gets the finite-number error rather than a usage message.
        self._negative_number_matcher = re.compile(r"^-(\.?\d[\d.,eE+\-]*|inf|infinity|nan)$", re.IGNORECASE)

    def error(self, message: str):
        choices = [a for action in self._actions for a in action.option_strings]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                choices += list(action.choices)
        words = [w for w in message.replace(",", " ").replace("'", " ").split() if w.startswith("-") or w.isidentifier()]
        for word in words:
            close = closest(word, choices)
            if close:
                message += f" (did you mean {close}?)"
                break
        super().error(message)


def build_parser(catalog: dict[str, dict] | None = None) -> argparse.ArgumentParser:
    """The whole parser: one subcommand per analysis with its options, plus run and models.
    Built from the catalogue (plain data), so it needs no torch."""
    from interplab.cli.args import add_spec_args
    from interplab.cli.catalog import catalog as cached

    catalog = cached() if catalog is None else catalog
    parser = Parser(prog="interplab", description=DESCRIPTION, epilog=_shared_options(catalog),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    for name, info in catalog.items():
        p = sub.add_parser(name, help=info["help"], description=info["description"])
        add_spec_args(p, info["fields"], tuple(info["positional"]))
    run = sub.add_parser("run", help=META["run"], description=META["run"])
    run.add_argument("config", nargs="?", help="path to the config file: 'analysis: NAME' plus its fields")
    run.add_argument("--list", action="store_true", help="list every analysis with its fields and their docs")
    sub.add_parser("models", help=META["models"], description=META["models"])
    serve.add_parser(sub)
    ui.add_parser(sub)
    return parser


def _shared_options(catalog: dict[str, dict]) -> str:
    """The options every analysis takes, with their help (the epilog of ``interplab --help``)."""
    import textwrap

    specs = [info["fields"] for info in catalog.values()]
    if not specs:
        return ""
    common = [s for s in specs[0] if all(any(t["name"] == s["name"] for t in other) for other in specs[1:])]
    lines = ["options every analysis takes (interplab COMMAND --help lists all of a command's):"]
    for spec in common:
        text = f"--{spec['name'].replace('_', '-')}: {spec['help']} (default: {spec['default']})"
        lines += textwrap.wrap(text, 78, initial_indent="  ", subsequent_indent="      ")
    return "\n".join(lines)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _cmd_models() -> int:
    from interplab.cli.render import print_models
    from interplab.models.loading import list_models

    print_models(list_models())
    return 0


def _cmd_list() -> int:
    """Every analysis with its fields, their docs and defaults (from the catalogue: no torch)."""
    from interplab.cli.catalog import catalog

    for name, info in catalog().items():
        print(f"{name}: {info['help']}")
        for spec in info["fields"]:
            default = "(required)" if spec["required"] else spec["default"]
            print(f"    {spec['name']} = {default}    {spec['help']}")
        print()
    return 0


def _run(name: str, config) -> int:
    from interplab.runs.render import print_blocks
    from interplab.runs.runner import run_analysis

    def phase(text: str) -> None:
        print(f"[interplab] {name}: {text}", file=sys.stderr, flush=True)

    outcome = run_analysis(name, config, phase=phase)
    print_blocks(outcome.terminal())
    label = getattr(outcome.result, "report_label", "")
    print(f"{label + ' ' if label else ''}report: {outcome.path / 'report.html'}")
    return 0


def parse(argv: list[str]):
    """Everything before the work: (command, parsed options, the analysis config or None).
    Usage errors exit (2) from argparse; bad values raise interplab errors."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # --help and usage errors exit here, before torch
    if extra:  # the subcommand's own usage, with the closest option suggested
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in ("models", "serve", "ui") or (args.command == "run" and args.list):
        return args.command, args, None
    if args.command == "run":
        if not args.config:
            _subparser(parser, "run").error("give a config file (or --list)")
        from interplab.runs.runner import config_from_file

        name, config = config_from_file(args.config)
        return name, args, config
    from interplab.cli.args import config_from_args
    from interplab.core.analysis import load_analyses

    return args.command, args, config_from_args(load_analyses().get(args.command).config, args)


def main(argv: list[str] | None = None) -> int:
    from interplab.core.errors import InterplabError

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        command, _args, config = parse(argv)
        if command == "models":
            return _cmd_models()
        if command == "serve":
            return serve.run(_args)
        if command == "ui":
            return ui.run(_args)
        if config is None:
            return _cmd_list()
        return _run(command, config)
    except InterplabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `interplab run --list | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
