"""One conformance test over the analysis registry: every registered analysis runs with its
declared ``example`` fields on a tiny random model, writes a complete run record (headline
numbers in results.json, started < ended, a non-empty figures/), and reads back equal; every
analysis is a CLI subcommand of the same name whose ``--help`` works, and vice versa.

The tiny model is a random 2-layer Llama with the default model's tokenizer (offline, from the
installed GGUF), so every task's answers are single tokens as they are on a real model."""

from __future__ import annotations

import dataclasses
import json

import pytest

from interplab.cli.main import META, build_parser, main
from interplab.core.analysis import load_analyses
from interplab.core.result import equal
from interplab.runs.runner import load_run, run_analysis

from .test_harvest import write_corpus

REGISTRY = load_analyses()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model, a corpus, an activation store and a trained dictionary."""
    root = tmp_path_factory.mktemp("conformance")
    model = _tiny_with_real_tokenizer(root / "model")
    corpus = write_corpus(root / "docs.txt", n_docs=120)
    assert main(["harvest", "--model", model, "--corpus", corpus, "--sites", "L1.resid_post",
                 "--n-tokens", "600", "--ctx-len", "16", "--shard-tokens", "300", "--dtype", "float32",
                 "--out", str(root / "store")]) == 0
    assert main(["train-sae", "--store", str(root / "store"), "--expansions", "2", "--k", "4",
                 "--batch-size", "64", "--steps", "6", "--out", str(root / "sae"), "--device", "cpu"]) == 0
    (dictionary,) = (root / "sae" / "dictionaries").glob("L1.resid_post.*")
    return {"model": model, "{corpus}": corpus, "{store}": str(root / "store"),
            "{dictionary}": str(dictionary), "{tmp}": str(root / "tmp"), "root": root}


def _tiny_with_real_tokenizer(directory) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from interplab.core.errors import MissingDependencyError, ModelNotFoundError
    from interplab.models.loading import convert_gguf, resolve

    try:
        tok = AutoTokenizer.from_pretrained(str(convert_gguf(resolve("smollm2-135m")[1])))
    except (ModelNotFoundError, MissingDependencyError) as err:  # `make test` installs it
        pytest.fail(f"the default model's tokenizer is needed here: {err}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return str(directory)


def _fill(value, world):
    if isinstance(value, str):
        for key in ("{corpus}", "{store}", "{dictionary}", "{tmp}"):
            value = value.replace(key, world[key])
    return value


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_analysis_writes_a_record_that_reads_back_equal(name, world, capsys):
    entry = REGISTRY.get(name)
    fields = {"out": str(world["root"] / "runs" / name), **{k: _fill(v, world) for k, v in entry.example.items()}}
    if "model" in {f.name for f in dataclasses.fields(entry.config)}:
        fields.setdefault("model", world["model"])
    outcome = run_analysis(name, outcome_config(name, fields), progress=False)
    path = outcome.path
    assert path.is_dir() and not path.name.startswith(".")
    results = json.loads((path / "results.json").read_text())
    assert results["analysis"] == name
    assert results["headline"], f"{name}: results.json has no headline numbers"
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["started"] < prov["ended"]
    assert any((path / "figures").iterdir()), f"{name} wrote no figure"
    assert (path / "report.html").stat().st_size > 0
    loaded = load_run(path)
    assert loaded.analysis == name
    assert loaded.config == outcome_config(name, fields)
    assert equal(outcome.result, loaded.result)
    assert type(loaded.result) is entry.result
    capsys.readouterr()


def outcome_config(name, fields):
    from interplab.core.config import build_config

    return build_config(REGISTRY.get(name).config, fields)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_analysis_has_a_working_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: interplab {name}" in out and "--out" in out


def test_subcommands_are_exactly_the_registry():
    from interplab.cli.catalog import catalog, describe

    fresh = describe()
    assert catalog() == json.loads(json.dumps(fresh))  # the cache says what the registry says
    sub = next(a for a in build_parser(fresh)._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) - set(META) == set(REGISTRY.names())
    for name, entry in REGISTRY.items():
        options = {o for a in sub.choices[name]._actions for o in a.option_strings}
        fields = {f"--{f.name.replace('_', '-')}" for f in dataclasses.fields(entry.config)
                  if f.name not in getattr(entry.config, "positional", ())}
        assert fields <= options, f"{name}: fields without an option: {sorted(fields - options)}"


def test_the_runtime_model_is_a_model(world):
    from interplab.core.model import Model
    from interplab.runtime.loading import load

    assert isinstance(load(world["model"]), Model)


@pytest.mark.parametrize(("name", "fields", "message"), [
    ("patch", {"n_resamples": 1}, "n_resamples must be >= 2, got 1"),
    ("patch", {"n": 0}, "n must be >= 1, got 0"),
    ("heads", {"n_sequences": 1}, "n_sequences must be >= 2, got 1"),
    ("trace", {"window": 0}, "window must be >= 1, got 0"),
    ("demo", {"n": 1}, "n must be >= 2, got 1"),
    ("lens", {"prompt": "x", "top_k": 0}, "top_k must be >= 1, got 0"),
    ("patch", {"dtype": "float8"}, "dtype='float8' is not one of"),
])
def test_declared_ranges_refuse_before_any_work(name, fields, message, tmp_path):
    from interplab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        run_analysis(name, model="/nonexistent", out=str(tmp_path / "runs"), **fields)
    assert not (tmp_path / "runs").exists()
