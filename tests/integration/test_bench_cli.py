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
    probes = [r for r in rows if r["suite"] == "probes" and r["method"].endswith(" probe")]
    assert {r["method"] for r in probes} == {"logistic probe", "diff_means probe", "lda probe"}
    paired = {r["method"]: r for r in rows if "paired" in r["method"]}
    assert set(paired) == {"logistic − diff_means (paired over seeds)", "lda − diff_means (paired over seeds)"}
    for r in paired.values():
        assert r["low"] <= r["score"] <= r["high"] and "paired permutation p = " in r["note"]
    for r in probes:
        assert r["low"] <= r["score"] <= r["high"]
        assert r["score"] > r["null"] + 0.5
    assert (run / "report.html").read_text().count("<tr>") == len(rows) + 1


def test_bench_unknown_suite(capsys):
    assert main(["bench", "--suites", "planted,vibes"]) == 2
    assert "Unknown suites ['vibes']" in capsys.readouterr().err


def test_bench_circuits_and_tracr_suites(tmp_path, capsys):
    assert main(["bench", "--quick", "--suites", "circuits,tracr", "--seeds", "2", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    rows = json.loads((next(tmp_path.glob("bench-quick-*")) / "results.json").read_text())["leaderboard"]
    circuits = {(r["model"].split(" (")[0], r["method"]): r for r in rows if r["suite"] == "circuits"}
    for planted in ("planted induction", "planted successor MLP"):
        exact = circuits[(planted, "exact edge patching")]
        assert exact["score"] == 1.0 and exact["passes"].endswith("0B")
        ig = circuits[(planted, "EAP-IG (m = 5)")]
        assert ig["score"] >= 0.95 and ig["low"] <= ig["score"] <= ig["high"]
        assert ig["null"] < ig["score"]
        f, b = (int(x[:-1]) for x in ig["passes"].split(" + "))
        assert f <= 2 + 5 and b <= 5  # 2F + m(F + B)
        f, b = (int(x[:-1]) for x in circuits[(planted, "EAP")]["passes"].split(" + "))
        assert f <= 2 and b <= 1
        assert circuits[(planted, "ACDC (KL, τ = 0.5)")]["score"] == 1.0
    # EAP's zero-gradient failure on the saturated induction heads is visible in the leaderboard.
    eap = circuits[("planted induction", "EAP")]
    assert eap["score"] < 1.0 and "scored ~0" in eap["note"]
    tracr = [r for r in rows if r["suite"] == "tracr"]
    assert [r["model"] for r in tracr] == ["tracr reverse", "tracr sort", "tracr hist", "tracr frac_prevs"]
    assert all(r["score"] == 1.0 for r in tracr)


def test_bench_trained_suite(tmp_path, capsys):
    assert main(["bench", "--quick", "--suites", "trained", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    rows = json.loads((next(tmp_path.glob("bench-quick-*")) / "results.json").read_text())["leaderboard"]
    assert [r["method"] for r in rows] == ["training", "training (shipped weights)", "Fourier analysis of the embedding",
                                          "exact edge patching", "EAP", "EAP-IG (m = 5)"]
    assert rows[0]["score"] >= 0.95 and "truth heads by ablation: L0." in rows[0]["note"]
    assert rows[1]["score"] >= 0.99 and rows[2]["score"] > rows[2]["null"] + 0.3
    for r in rows[3:]:
        assert 0.0 <= r["score"] <= 1.0 and r["passes"]


def test_bench_takes_suite_as_well_as_suites():
    from interplab.cli.main import parse

    _, _, config = parse(["bench", "--quick", "--suite", "gnn"])
    assert config.suites == ("gnn",)
    _, _, config = parse(["bench", "--suites", "planted,gnn"])
    assert config.suites == ("planted", "gnn")
