"""The pieces under the runner: declared config checks, typed config building, exact result
storage, the analysis registry and the CLI's fast paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch

from interplab.core.analysis import ANALYSES, Analysis, analysis_modules, register_analysis
from interplab.core.config import RunFields, TaskFields, build_config, param
from interplab.core.errors import ConfigError, InputError, InterplabError
from interplab.core.result import Result, decode, encode, equal


@dataclass(frozen=True)
class _Lib:
    sweep: str = param("a", help="what", choices=("a", "b"))
    rate: float = param(0.5, help="rate", gt=0.0, le=1.0)
    layers: tuple[int, ...] | None = param(None, help="layers")
    flag: bool = param(False, help="flag")

    def __post_init__(self) -> None:
        if self.flag and self.sweep == "b":
            raise ConfigError("flag needs sweep a")


@dataclass(frozen=True)
class _Composed(RunFields, TaskFields, _Lib):
    """A composed run config."""


def test_declared_checks_run_once_for_composed_configs():
    assert _Composed().n == 8 and _Composed().model == "smollm2-135m"
    with pytest.raises(ConfigError, match="n must be >= 1, got 0"):
        _Composed(n=0)
    with pytest.raises(ConfigError, match="rate must be > 0.0, got 0.0"):
        _Composed(rate=0.0)
    with pytest.raises(ConfigError, match="sweep='c' is not one of 'a', 'b'"):
        _Composed(sweep="c")
    with pytest.raises(ConfigError, match="dtype='float8' is not one of"):
        _Composed(dtype="float8")
    with pytest.raises(ConfigError, match="flag needs sweep a"):  # the library's own check still runs
        _Composed(flag=True, sweep="b")


def test_build_config_converts_and_names_the_field():
    cfg = build_config(_Composed, {"n": "3", "rate": "0.25", "layers": "1, 2", "flag": "true", "seed": 4})
    assert (cfg.n, cfg.rate, cfg.layers, cfg.flag, cfg.seed) == (3, 0.25, (1, 2), True, 4)
    assert build_config(_Composed, {"layers": 3}).layers == (3,)
    assert build_config(_Composed, {"layers": None}).layers is None
    with pytest.raises(ConfigError, match="n must be an integer, got 'three'"):
        build_config(_Composed, {"n": "three"})
    with pytest.raises(ConfigError, match="n must be an integer, got 2.5"):
        build_config(_Composed, {"n": 2.5})
    with pytest.raises(ConfigError, match=r"Unknown fields \['rates'\] in config. Did you mean 'rate'\?"):
        build_config(_Composed, {"rates": 1})
    with pytest.raises(ConfigError, match="flag must be true or false"):
        build_config(_Composed, {"flag": "maybe"})


@dataclass
class _Inner(Result):
    mean: torch.Tensor
    low: torch.Tensor


@dataclass
class _Outer(Result):
    record_inline = ("summary",)
    summary: _Inner
    effects: torch.Tensor
    axes: dict
    labels: tuple
    by_layer: dict
    nothing: None = None
    ratio: float = float("nan")


def _outer() -> _Outer:
    return _Outer(_Inner(torch.arange(3.0), torch.zeros(3, dtype=torch.float64)), torch.randn(2, 3),
                  {"layer": [0, 1], "pos": [3]}, ("a", 1), {2: torch.ones(1), 5: "x"})


def test_results_round_trip_exactly():
    original = _outer()
    tensors: dict = {}
    tree = json.loads(json.dumps(encode(original, tensors)))
    assert set(tensors) == {"mean", "low", "effects", "by_layer.2"}  # the summary sits inline
    back = decode(tree, tensors, allow=(_Outer, _Inner))
    assert equal(original, back) and isinstance(back.summary, _Inner)
    assert back.labels == ("a", 1) and back.by_layer[5] == "x"
    other = _outer()
    other.summary.mean[0] = 7.0
    assert not equal(original, other)


def test_results_refuse_objects_and_foreign_types():
    with pytest.raises(InputError, match="not an interplab result type"):
        decode(json.loads(json.dumps(encode(_outer(), {}))), {})
    with pytest.raises(InputError, match="Cannot store a Linear at model"):
        encode({"model": torch.nn.Linear(2, 2)}, {})
    for name in ("os:system", "builtins:eval", "interplab.core.errors:choices"):
        with pytest.raises(InputError):
            decode({"__dataclass__": name}, {})


def test_registering_a_name_twice_is_refused():
    name = "test-analysis-registered-twice"

    def fn(cfg, ctx):
        return None

    register_analysis(name, config=_Composed, result=_Outer, help="x")(fn)
    assert isinstance(ANALYSES.get(name), Analysis)
    with pytest.raises(InterplabError, match="already registered"):
        register_analysis(name, config=_Composed, result=_Outer, help="x")(fn)
    ANALYSES._entries.pop(name)


def test_analysis_files_are_found_by_name_outside_runs():
    mods = analysis_modules()
    assert "interplab.analyses.heads_run" in mods
    assert all(m.endswith("_run") and not m.startswith("interplab.runs.") for m in mods)


def _cli(args, home):
    env = {**os.environ, "INTERPLAB_HOME": str(home)}
    code = ("import sys; from interplab.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def test_top_level_help_and_typos_do_not_import_torch(tmp_path):
    first = _cli(["--help"], tmp_path)  # builds the catalogue once
    assert first.returncode == 0 and "heads" in first.stdout
    again = _cli(["--help"], tmp_path)
    assert again.stdout.strip().endswith("NO-TORCH 0"), again.stdout[-300:]
    typo = _cli(["haeds"], tmp_path)
    assert "did you mean heads?" in typo.stderr and typo.stdout.strip().endswith("NO-TORCH 2")
    sub = _cli(["heads", "--help"], tmp_path)
    assert "--n-sequences" in sub.stdout and sub.stdout.strip().endswith("NO-TORCH 0")
    option = _cli(["heads", "--n-sequence", "3"], tmp_path)
    assert "did you mean --n-sequences?" in option.stderr and option.stdout.strip().endswith("NO-TORCH 2")


def test_a_mistyped_option_names_the_close_match_and_the_subcommand(capsys):
    from interplab.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["heads", "--n-sequence", "3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: interplab heads" in err and "did you mean --n-sequences?" in err
