"""``interplab probe`` end to end on a tiny model saved to disk: a run record with a probe per
layer, the figure, and the best probe saved and reloadable; a user file with one class only is
a clear error before any model work."""

from __future__ import annotations

import json

from interplab.analyses.probes import Probe
from interplab.cli.main import main

from .test_harvest import save_tiny


def test_probe_cli(tmp_path, capsys):
    model = save_tiny(tmp_path / "model")
    assert main(["probe", "--model", model, "--dataset", "sentiment", "--n", "48", "--layers", "0,1",
                 "--out", str(tmp_path / "runs")]) == 0
    assert "report:" in capsys.readouterr().out
    run = next((tmp_path / "runs").glob("probe-sentiment-*"))
    results = json.loads((run / "results.json").read_text())
    assert results["sweep"]["sites"] == ["L0.resid_post", "L1.resid_post"]
    assert all(0.0 <= a <= 1.0 for a in results["sweep"]["test_accuracy"])
    assert (run / "figures" / "probe_accuracy.png").exists()
    probe = Probe.load(run / "probe")
    assert probe.site == results["best_site"]


def test_probe_cli_one_class_file(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"text": f"text {i}", "label": 1}) + "\n" for i in range(6)))
    assert main(["probe", "--model", "/nonexistent", "--dataset", str(data), "--out", str(tmp_path)]) == 2
    assert "Labels of one class only: all 6 rows are 1" in capsys.readouterr().err
