"""Run records are atomic: a run only becomes visible, complete, when it finishes."""

import json

import pytest
import torch
from safetensors.torch import load_file

from interplab.analyses.patching_run import PatchRunConfig
from interplab.core.errors import ConfigError
from interplab.runs.record import RunRecord, list_runs
from interplab.runs.report import Report
from interplab.runs.runner import run_config_file


def test_a_finished_run_has_every_file(tmp_path):
    with RunRecord(tmp_path, "demo", {"a": 1}, seed=3) as run:
        run.add_tensors("x", {"mean": torch.arange(3.0)})
        run.add_results("summary", {"r": 0.5})
        report = Report("t")
        report.table(["a", "b"], [["x", 1.0]])
        run.write_text("report.html", report.render())
        assert list_runs(tmp_path) == []  # not visible while running
    (path,) = list_runs(tmp_path)
    assert {p.name for p in path.iterdir()} >= {"config.json", "results.json", "provenance.json",
                                                  "results.safetensors", "report.html", "figures"}
    assert torch.equal(load_file(path / "results.safetensors")["x.mean"], torch.arange(3.0))
    prov = json.loads((path / "provenance.json").read_text())
    assert prov["seed"] == 3 and prov["started"] <= prov["ended"] and prov["interplab_version"]
    assert json.loads((path / "config.json").read_text()) == {"a": 1}


def test_a_crashed_run_leaves_nothing_that_looks_complete(tmp_path):
    with pytest.raises(RuntimeError), RunRecord(tmp_path, "demo", {}) as run:
        run.add_results("half", 1)
        raise RuntimeError("killed")
    assert list_runs(tmp_path) == []
    assert not any(tmp_path.iterdir())


def test_a_killed_run_is_hidden(tmp_path):
    run = RunRecord(tmp_path, "demo", {})
    run.__enter__()  # a process killed here never reaches __exit__
    assert run.path.name.startswith(".incomplete-")
    assert list_runs(tmp_path) == []


def test_config_files_are_validated_before_work(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("analysis: patching\nsweep: resid\n")
    with pytest.raises(ConfigError, match="Unknown sweep 'resid'"):
        run_config_file(bad)
    bad.write_text("analysis: tracing\n")
    with pytest.raises(ConfigError, match="Unknown analysis 'tracing'. Did you mean 'trace'?"):
        run_config_file(bad)
    bad.write_text("analysis: patching\nlayer_count: 3\n")
    with pytest.raises(ConfigError, match="Unknown fields \\['layer_count'\\]"):
        run_config_file(bad)
    with pytest.raises(ConfigError, match="Unknown metric"):
        PatchRunConfig(metric="accuracy")


def test_tracking_is_off_by_default_and_logs_when_asked(tmp_path, monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("mlflow")

    class _Run:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    fake.start_run = lambda run_name: calls.append(("start", run_name)) or _Run()
    fake.log_params = lambda p: calls.append(("params", p))
    fake.log_artifacts = lambda d: calls.append(("artifacts", d))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    monkeypatch.delenv("INTERPLAB_TRACKING", raising=False)
    with RunRecord(tmp_path, "a", {"x": 1}):
        pass
    assert calls == []
    monkeypatch.setenv("INTERPLAB_TRACKING", "mlflow")
    with RunRecord(tmp_path, "b", {"x": {"y": 2}}) as run:
        pass
    assert ("params", {"x.y": "2"}) in calls and ("artifacts", str(run.final)) in calls
