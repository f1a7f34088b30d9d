"""``interplab bench`` writes a leaderboard run record; planted programs are exact, probes beat
their shuffled-label null by a wide margin; unknown suites are a clear error."""

from __future__ import annotations

import json

from interplab.cli.main import main


def test_bench_quick_leaderboard(tmp_path, capsys):
    assert main(["bench", "--quick", "--suites", "planted,probes", "--seeds", "2", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "leaderboard" in out and "report:" in out
    run = next(tmp_path.glob("bench-quick-*"))
    rows = json.loads((run / "results.json").read_text())["leaderboard"]
    planted = [r for r in rows if r["suite"] == "planted"]
    assert len(planted) == 2 and all(r["score"] == 1.0 for r in planted)
    probes = [r for r in rows if r["suite"] == "probes"]
    assert {r["method"] for r in probes} == {"logistic probe", "diff_means probe", "lda probe"}
    for r in probes:
        assert r["low"] <= r["score"] <= r["high"]
        assert r["score"] > r["null"] + 0.5
    assert (run / "report.html").read_text().count("<tr>") == len(rows) + 1


def test_bench_unknown_suite(capsys):
    assert main(["bench", "--suites", "planted,vibes"]) == 2
    assert "Unknown suites ['vibes']" in capsys.readouterr().err
