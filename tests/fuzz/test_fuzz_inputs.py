"""The fuzzing tier: property-based bad inputs (hypothesis) for config files, CLI arguments and
intervention JSON. Whatever a user types, the answer is a config, a usage message (argparse's
exit 2, or 0 for --help) or one of interplab's own errors with a message — never a traceback of
another exception type. Everything here stops before any model work, so each example costs
milliseconds; examples are derandomized (the same inputs every run) and bounded in number."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from interplab.cli.main import parse
from interplab.core.analysis import load_analyses
from interplab.core.errors import InterplabError
from interplab.runs.runner import config_from_file

REGISTRY = load_analyses()
NAMES = REGISTRY.names()
FIELDS = sorted({f.name for _, e in REGISTRY.items() for f in dataclasses.fields(e.config)})
FUZZ = settings(max_examples=150, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "-1", "0", "nan", "inf", "1e309", "eight", "fast", "L99.resid_post", "cuda:7",
                     "resid_pre", "heads", "ioi", "/nonexistent", "hf:nope", "1,2,x", "-1,0,1"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)


def _refused_cleanly(fn) -> str:
    """Run ``fn``; return how it ended. Anything but a config, a usage exit or an interplab
    error fails the test (with the exception as the cause)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            fn()
    except SystemExit as e:
        assert e.code in (0, 2), f"exit {e.code}"
        assert e.code == 0 or "error:" in err.getvalue()
        return "usage"
    except InterplabError as e:
        assert str(e).strip(), "an error without a message"
        return "error"
    return "ok"


@FUZZ
@given(analysis=st.one_of(st.sampled_from(NAMES), st.text(max_size=10)),
       data=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=5))
def test_config_files(tmp_path_factory, analysis, data):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(json.dumps({"analysis": analysis, **data}, default=str))
    _refused_cleanly(lambda: config_from_file(path))


@FUZZ
@given(text=st.one_of(st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
                      st.sampled_from(["analysis: [", "analysis: patch\n  n: 3\n n: 4", "- 1\n- 2", "{{}}", "\t:",
                                       "analysis: patch\nn: eight", "analysis: patch\nscales: 1"])))
def test_config_file_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _refused_cleanly(lambda: config_from_file(path))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@FUZZ
@given(command=st.sampled_from([*NAMES, "run", "models"]),
       words=st.lists(st.one_of(st.sampled_from([_flag(f) for f in FIELDS] + ["--help", "--no-quick", "-v"]),
                                scalars.map(str)), max_size=6))
def test_cli_arguments(command, words):
    _refused_cleanly(lambda: parse([command, *words]))


@pytest.mark.parametrize("argv", [["patch", "--n", "eight"], ["patch", "--n-resamples", "0"],
                                  ["steer", "--scales", "-1,0,1", "--n", "nan"], ["lens", "x", "--top-k", "-3"],
                                  ["patch", "--device", "cuda:3"], ["train-sae", "--lr", "fast"]])
def test_known_bad_cli_values_are_interplab_errors(argv):
    assert _refused_cleanly(lambda: parse(argv)) == "error"


def test_negative_numbers_in_list_options_parse():
    _, _, config = parse(["steer", "--scales", "-1,0,1"])
    assert config.scales == (-1.0, 0.0, 1.0)
    with pytest.raises(InterplabError, match="finite"):
        parse(["generate", "--scale", "-inf"])


intervention = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(["patch", "ablate", "steer", "apply"]), st.text(max_size=6))},
    optional={"site": st.one_of(st.sampled_from(["L0.resid_pre", "L1.attn.z[h0]", "embed", "L-1.x"]), scalars),
              "positions": values, "rows": values, "mode": values, "scale": values, "value": values,
              "vector": st.one_of(values, st.fixed_dictionaries({}, optional={
                  "data": values, "shape": values, "dtype": st.sampled_from(["float32", "int64", "save", "x"])}))})


@FUZZ
@given(data=intervention)
def test_intervention_json(data):
    from interplab.interventions.spec import Intervention

    text = json.dumps(data, default=str)
    _refused_cleanly(lambda: Intervention.from_json(text))
