"""The main job and the run-record subcommands, end to end on the real default model (small)."""

import json

import pytest
from safetensors.torch import load_file

from interplab.cli.main import main
from interplab.runs.record import list_runs

pytestmark = pytest.mark.models


def test_ioi_demo_writes_a_report_with_intervals(tmp_path, capsys):
    assert main(["demo", "--mode", "exact", "--n", "3", "--n-resamples", "200", "--out", str(tmp_path)]) == 0
    (run,) = list_runs(tmp_path)
    assert f"IOI report: {run / 'report.html'}" in capsys.readouterr().out
    html = (run / "report.html").read_text()
    for text in ("95% CI", "q (BH)", "Logit lens", "Attribution patching vs exact head patching"):
        assert text in html
    tensors = load_file(run / "results.safetensors")
    low, high, mean = (tensors[f"patch_heads.{k}"] for k in ("low", "high", "mean"))
    assert mean.shape == (30, 9) and bool((low <= mean + 1e-9).all() and (mean <= high + 1e-9).all())
    prov = json.loads((run / "provenance.json").read_text())
    assert prov["model"] == "smollm2-135m" and prov["weights_hash"]
    assert {p.name for p in (run / "figures").iterdir()} >= {"patch_resid_pre.png", "patch_heads.png"}


def test_heads_and_trace_subcommands(tmp_path):
    assert main(["heads", "--n-sequences", "4", "--out", str(tmp_path)]) == 0
    assert main(["trace", "--n", "2", "--out", str(tmp_path)]) == 0
    names = sorted(p.name.split("-")[0] for p in list_runs(tmp_path))
    assert names == ["heads", "trace"]
    assert main(["dla", "--n", "2", "--out", str(tmp_path)]) == 0
    assert main(["attribute", "--n", "2", "--nodes", "mlp", "--n-resamples", "100", "--out", str(tmp_path)]) == 0
    (att,) = [p for p in list_runs(tmp_path) if p.name.startswith("attribute")]
    vs = json.loads((att / "results.json").read_text())["vs_exact"]
    assert -1.0 <= vs["pearson"] <= 1.0 and -1.0 <= vs["kendall"] <= 1.0


def test_bad_input_prints_one_clear_line(capsys):
    assert main(["patch", "--sweep", "resid", "--out", "/nonexistent"]) == 2
    assert "error: Unknown sweep 'resid'" in capsys.readouterr().err
