"""The main job finds what IOI is known for (Wang et al. 2022) on the default model, with
statistics that can answer: at the demo's number of pairs, role-aligned prompts give
name-position effects of one sign across prompts, and cells pass Benjamini–Hochberg."""

import pytest

from interplab.analyses.ioi_run import IOIRunConfig
from interplab.runs.runner import run_analysis

pytestmark = pytest.mark.models


def test_role_aligned_ioi_patching_finds_significant_name_positions(tmp_path):
    n = IOIRunConfig().n  # the demo's default
    out = run_analysis("patch", task="ioi", n=n, sweep="resid_pre", n_resamples=500, out=str(tmp_path),
                       progress=False)
    res = out.result
    roles = {role: pos for pos, role in res.position_roles.items()}
    assert {"io", "s1", "s2", "end"} <= set(roles)
    pos = res.axes["pos"]
    io = res.effects[:, 0, pos.index(roles["io"])]  # layer 0: patching the clean IO name
    assert bool((io > 0).all()), io  # one sign in every prompt (ABBA/BABA never pooled)
    s2 = res.effects[:, 0, pos.index(roles["s2"])]
    assert bool((s2 < 0).all()), s2  # ABC corruption: S2 alone restores a repeat the corrupt run lacked
    assert int(res.summary.significant.sum()) >= 1 and float(res.summary.q.min()) < 0.05
    html = (out.path / "report.html").read_text()
    assert "smallest attainable permutation p" in html and " IO" in html
