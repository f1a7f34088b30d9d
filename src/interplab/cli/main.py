"""The ``interplab`` command. Subcommands are thin: parse a config, call one library function,
print. Errors a user can trigger print as one clear message (exit 2), not a traceback."""

from __future__ import annotations

import argparse
import logging
import sys

from interplab.analyses.logit_lens import LogitLensConfig
from interplab.cli.args import add_config_args, config_from_args
from interplab.core.errors import InterplabError


def _cmd_lens(args) -> int:
    from interplab.cli.render import print_lens
    from interplab.runtime.loading import load

    config = config_from_args(LogitLensConfig, args)
    from interplab.analyses.logit_lens import logit_lens

    model = load(config.model)
    print_lens(model, logit_lens(model, config))
    return 0


def _cmd_models(args) -> int:
    from interplab.cli.render import print_models
    from interplab.models.loading import list_models

    print_models(list_models())
    return 0


def _cmd_demo(args) -> int:
    from interplab.runs.ioi_demo import IOIDemoConfig, ioi_demo

    path = ioi_demo(config_from_args(IOIDemoConfig, args))
    print(f"IOI report: {path / 'report.html'}")
    return 0


def _cmd_patch(args) -> int:
    from interplab.runs.experiments import PatchRunConfig, patch_run

    path = patch_run(config_from_args(PatchRunConfig, args))
    print(f"patching report: {path / 'report.html'}")
    return 0


def _cmd_run(args) -> int:
    from interplab.runs.experiments import run_config_file

    path = run_config_file(args.config)
    print(f"report: {path / 'report.html'}")
    return 0


def _cmd_harvest(args) -> int:
    from interplab.activations import HarvestConfig
    from interplab.cli.render import print_harvest
    from interplab.runs.sae_runs import harvest_run

    print_harvest(harvest_run(config_from_args(HarvestConfig, args)))
    return 0


def _cmd_train_sae(args) -> int:
    from interplab.runs.sae_runs import TrainSaeConfig, train_sae_run

    path = train_sae_run(config_from_args(TrainSaeConfig, args))
    print(f"dictionaries: {path.parent / 'dictionaries'}")
    print(f"report: {path / 'report.html'}")
    return 0


def _cmd_eval_sae(args) -> int:
    from interplab.cli.render import print_eval
    from interplab.runs.sae_runs import EvalSaeConfig, eval_sae_run

    path = eval_sae_run(config_from_args(EvalSaeConfig, args))
    print_eval(path)
    return 0


def _cmd_generate(args) -> int:
    from interplab.runs.steer_runs import GenerateConfig, generate_run

    cfg = config_from_args(GenerateConfig, args)
    out = generate_run(cfg)
    print(f"plain:   {cfg.prompt}{out['plain']}")
    if "steered" in out:
        print(f"steered (scale {cfg.scale:g}): {cfg.prompt}{out['steered']}")
    return 0


def _cmd_bench(args) -> int:
    from interplab.runs.bench_runs import BenchConfig, bench_run, print_leaderboard

    print_leaderboard(bench_run(config_from_args(BenchConfig, args)))
    return 0


def _runner(cls, fn):
    def command(args) -> int:
        path = fn(config_from_args(cls, args))
        print(f"report: {path / 'report.html'}")
        return 0
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interplab", description="interplab: exact, fast, honest interpretability on Hugging Face LMs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    lens = sub.add_parser("lens", help="top next-token predictions and a logit-lens table")
    add_config_args(lens, LogitLensConfig, positional=("prompt",))
    lens.set_defaults(func=_cmd_lens)
    from interplab.runs.experiments import PatchRunConfig
    from interplab.runs.ioi_demo import IOIDemoConfig

    demo = sub.add_parser("demo", help="the IOI analysis as an HTML report (the main job)")
    add_config_args(demo, IOIDemoConfig)
    demo.set_defaults(func=_cmd_demo)
    patch = sub.add_parser("patch", help="one activation-patching sweep on a task, as a run record")
    add_config_args(patch, PatchRunConfig)
    patch.set_defaults(func=_cmd_patch)
    from interplab.runs import more_runs as m

    for name, cls, fn, text in (
        ("trace", m.TraceRunConfig, m.trace_run, "causal tracing (ROME) on the facts task"),
        ("path-patch", m.PathPatchRunConfig, m.path_patch_run, "path patching into receiver sites"),
        ("heads", m.HeadsRunConfig, m.heads_run, "previous-token / duplicate / induction head scores"),
        ("dla", m.DLARunConfig, m.dla_run, "direct logit attribution per layer and head"),
        ("attribute", m.AttributeRunConfig, m.attribute_run, "attribution patching / IG vs exact patching"),
    ):
        p = sub.add_parser(name, help=text)
        add_config_args(p, cls)
        p.set_defaults(func=_runner(cls, fn))
    from interplab.activations import HarvestConfig
    from interplab.runs.bench_runs import BenchConfig
    from interplab.runs.probe_runs import ProbeRunConfig, probe_run
    from interplab.runs.sae_runs import EvalSaeConfig, TrainSaeConfig
    from interplab.runs.steer_runs import GenerateConfig, SteerRunConfig, steer_run

    for name, cls, fn, text in (
        ("harvest", HarvestConfig, _cmd_harvest, "harvest activations into a sharded on-disk store (resumable)"),
        ("train-sae", TrainSaeConfig, _cmd_train_sae, "train SAEs / transcoders from an activation store"),
        ("eval-sae", EvalSaeConfig, _cmd_eval_sae, "evaluate a dictionary spliced into its model; feature statistics"),
        ("probe", ProbeRunConfig, _runner(ProbeRunConfig, probe_run), "probes across layers with control tasks, as a run record"),
        ("steer", SteerRunConfig, _runner(SteerRunConfig, steer_run), "extract a steering vector and evaluate its effect and side effects"),
        ("generate", GenerateConfig, _cmd_generate, "generate from a prompt, optionally with a saved steering vector"),
        ("bench", BenchConfig, _cmd_bench, "score methods against known mechanisms; writes a leaderboard"),
    ):
        p = sub.add_parser(name, help=text)
        add_config_args(p, cls)
        p.set_defaults(func=fn)
    run = sub.add_parser("run", help="run any analysis from a YAML/JSON config file")
    run.add_argument("config", help="path to the config file (see README)")
    run.set_defaults(func=_cmd_run)
    models = sub.add_parser("models", help="list default and cached models")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except InterplabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
