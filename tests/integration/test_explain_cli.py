"""``interplab explain`` end to end on the conformance test's tiny model and trained dictionary:
a labels artifact with scores, controls and the contexts used; a re-run resumes (only missing
latents are redone) and is identical; a local-model run is served from its cache the second time;
an endpoint that is down is a clear error per latent and the run still finishes."""

from __future__ import annotations

import json

import pytest

from interplab.cli.main import main
from tests.integration.test_analyses_conformance import world  # noqa: F401 (fixture)


def run(world, labels, *extra):  # noqa: F811
    args = ["explain", "--model", world["model"], "--dictionary", world["{dictionary}"], "--corpus", world["{corpus}"],
            "--n-contexts", "48", "--ctx-len", "16", "--n-latents", "5", "--labels-dir", str(labels),
            "--out", str(labels.parent / "runs"), *extra]
    assert main(args) == 0
    return json.loads((labels / "labels.json").read_text())


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_rule_labels_with_controls_and_a_resumable_journal(world, tmp_path, capsys):  # noqa: F811
    labels = tmp_path / "labels"
    first = run(world, labels, "--explainer", "rule", "--judge", "rule")
    rows = first["latents"]
    assert len(rows) == 5 and all(r["label"] for r in rows)
    for r in rows:
        det = r["scores"]["detection"]
        assert set(det) >= {"score", "shuffled", "random", "gap_shuffled", "gap_random"}
        assert det["score"]["n_pos"] + det["score"]["n_neg"] > 0
        assert not set(r["contexts"]["explain"]) & set(r["contexts"]["score"])  # disjoint halves
    assert set(first["summary"]) == {"detection", "fuzzing"}
    np_rows = json.loads((labels / "neuronpedia-explanations.json").read_text())
    assert [int(x["index"]) for x in np_rows] == [r["latent"] for r in rows]
    assert {"modelId", "layer", "index", "description", "explanationModelName", "typeName"} <= set(np_rows[0])
    # a crash that lost the last two scores and tore a line: the re-run redoes exactly those
    journal = labels / "scores.jsonl"
    kept = journal.read_text().splitlines()[:-2]
    journal.write_text("\n".join(kept) + '\n{"latent": 3, "key"')
    second = run(world, labels, "--explainer", "rule", "--judge", "rule")
    assert len(lines(labels / "explanations.jsonl")) == 5  # nothing explained twice
    assert len([x for x in journal.read_text().splitlines()]) == len(kept) + 1 + 2
    assert second["latents"] == rows and second["summary"] == first["summary"]
    capsys.readouterr()


def long_context_copy(model_dir, out):
    """The tiny model with room for the explainer's prompts (rotary Llama runs past its stated
    positions unchanged; only the limit interplab checks is raised)."""
    import shutil

    shutil.copytree(model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (out / "config.json").write_text(json.dumps(cfg))
    return str(out)


def test_a_local_model_rerun_is_served_from_the_cache(world, tmp_path, capsys):  # noqa: F811
    labels = tmp_path / "labels"
    lm = long_context_copy(world["model"], tmp_path / "lm")
    args = ("--explainer", "local", "--judge", "local", "--lm", lm)
    first = run(world, labels, *args)
    assert all(r["label"] and not r["error"] for r in first["latents"])
    cached = lines(labels / "lm-cache.jsonl")
    assert cached
    for name in ("explanations.jsonl", "scores.jsonl", "labels.json"):
        (labels / name).unlink()
    second = run(world, labels, *args)
    assert second["latents"] == first["latents"]
    assert len(lines(labels / "lm-cache.jsonl")) == len(cached)  # every call answered from the cache
    capsys.readouterr()


def test_an_endpoint_that_is_down_is_an_error_per_latent(world, tmp_path, capsys):  # noqa: F811
    import socket

    with socket.socket() as s:  # a free port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    labels = tmp_path / "labels"
    out = run(world, labels, "--explainer", "endpoint", "--judge", "rule", "--endpoint-url",
              f"http://127.0.0.1:{port}/v1", "--endpoint-model", "m")
    assert all(r["label"] is None and f"127.0.0.1:{port}" in r["error"] for r in out["latents"])
    assert all("error" in x for x in lines(labels / "explanations.jsonl"))
    capsys.readouterr()


@pytest.mark.parametrize(("extra", "message"), [
    (("--explainer", "endpoint"), "needs --endpoint-url"),
    (("--intruder",), "needs a model judge"),
])
def test_bad_settings_are_refused_before_any_work(world, tmp_path, capsys, extra, message):  # noqa: F811
    code = main(["explain", "--dictionary", world["{dictionary}"], "--judge", "rule", *extra])
    assert code == 2 and message in capsys.readouterr().err
