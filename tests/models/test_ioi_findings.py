"""The main job finds what IOI is known for (Wang et al. 2022) on the default model, with
statistics that can answer: at the demo's number of pairs, role-aligned prompts give
name-position effects of one sign across prompts, and cells pass Benjamini–Hochberg; the
demo's verified path (AtP*, then exact patching of its top cells and a random sample) patches
the exact sweep's top cells and agrees with it on every cell it patches."""

import pytest
import torch

from interplab.analyses.ioi_run import IOIRunConfig
from interplab.analyses.verified import VerifiedConfig, verified_patching
from interplab.runs.runner import run_analysis
from interplab.tasks.aligned import aligned_task

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def exact(tmp_path_factory):
    n = IOIRunConfig().n  # the demo's default
    return run_analysis("patch", task="ioi", n=n, sweep="resid_pre", n_resamples=500,
                        out=str(tmp_path_factory.mktemp("ioi")), progress=False)


def test_role_aligned_ioi_patching_finds_significant_name_positions(exact):
    res = exact.result
    roles = {role: pos for pos, role in res.position_roles.items()}
    assert {"io", "s1", "s2", "end"} <= set(roles)
    pos = res.axes["pos"]
    io = res.effects[:, 0, pos.index(roles["io"])]  # layer 0: patching the clean IO name
    assert bool((io > 0).all()), io  # one sign in every prompt (ABBA/BABA never pooled)
    s2 = res.effects[:, 0, pos.index(roles["s2"])]
    assert bool((s2 < 0).all()), s2  # ABC corruption: S2 alone restores a repeat the corrupt run lacked
    assert int(res.summary.significant.sum()) >= 1 and float(res.summary.q.min()) < 0.05
    html = (exact.path / "report.html").read_text()
    assert "smallest attainable permutation p" in html and " IO" in html


def test_the_verified_path_patches_the_exact_top_cells(exact):
    from interplab.runtime.loading import load

    cfg = IOIRunConfig()
    model = load("smollm2-135m")
    task = aligned_task(model, "ioi", cfg.n, cfg.seed)
    v = verified_patching(model, task.clean, task.corrupt, task.answers, task.wrong,
                          VerifiedConfig(sweep="resid_pre", mode="verified", top_k=cfg.top_k, n_random=cfg.n_random,
                                         n_resamples=500, seed=cfg.seed))
    grid = exact.result.summary.mean
    top = grid.abs().flatten().argsort(descending=True)[:10].tolist()
    names = list(v.axes)
    verified = {v.axes[names[0]].index(c[0]) * grid.shape[1] + v.axes[names[1]].index(c[1]) for c in v.cells}
    assert set(top) <= verified
    assert torch.allclose(v.effects[v.verified].float(), grid[v.verified].float(), atol=1e-5)
    assert v.rank_corr is not None and v.rank_corr > 0.8
