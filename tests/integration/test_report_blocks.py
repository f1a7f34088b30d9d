"""The report blocks of every analysis carry the numbers a web UI shows on hover, and those
numbers are the result's own: patching-like heatmaps their summary's CI ends, p and q (tokens
and roles kept on the position axis), verified sweeps the exact cells' statistics on the grid,
head and DLA heatmaps their CIs, the logit lens a layer × position grid, probe and steering
sweeps their bands and tables, and the bench's circuits a graph per method with the planted
truth. Records written before the new fields still decode and report."""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.attribute_run import AttributeResult
from interplab.analyses.attribution import AttributionConfig, attribution_patching
from interplab.analyses.causal_tracing import CausalTracingConfig, causal_tracing
from interplab.analyses.dla import DLAConfig, direct_logit_attribution
from interplab.analyses.dla_run import DLARunResult
from interplab.analyses.heads import HeadDetectionConfig, detect_heads
from interplab.analyses.heads_run import SHOWN, HeadsResult
from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.analyses.patching_report import patching_blocks
from interplab.analyses.patching_run import PatchRunResult
from interplab.analyses.path_patch_run import PathPatchResult
from interplab.analyses.path_patching import PathPatchingConfig, path_patching
from interplab.analyses.probe_run import ProbeRunResult
from interplab.analyses.steer_run import SteerRunResult
from interplab.analyses.trace_run import TraceResult
from interplab.analyses.verified import VerifiedConfig, verified_patching
from interplab.analyses.verified_report import verified_blocks
from interplab.core.blocks import Graph, Heatmap, Lines, Table
from interplab.core.result import decode, encode, equal
from interplab.runs.render import figure
from interplab.runtime import HookedModel

from .families import tokens
from .test_attribution import tiny_llama

FAST = {"n_resamples": 100}


@pytest.fixture(scope="module")
def llama() -> HookedModel:
    return HookedModel(tiny_llama())


@pytest.fixture(scope="module")
def pairs():
    clean = tokens(5, 7, seed=3)
    corrupt = clean.clone()
    corrupt[:, 1], corrupt[:, 4] = tokens(5, seed=4), tokens(5, seed=5)
    answers, wrong = tokens(5, seed=6), tokens(5, seed=7)
    return clean, corrupt, answers, torch.where(wrong == answers, 3 + (answers - 2) % 29, wrong)


def heatmaps(blocks) -> list[Heatmap]:
    return [b for b in blocks if isinstance(b, Heatmap)]


def assert_cells(block: Heatmap, summary, index=()):
    """The heatmap's CI ends, p and q are the summary's, cell for cell."""
    for name in ("low", "high", "p", "q"):
        got, want = getattr(block, name), getattr(summary, name)[index]
        assert got is not None and got.shape == block.values.shape, name
        assert torch.equal(got, want), name
    assert torch.equal(block.values, summary.mean[index].float())
    assert bool((block.low <= block.high).all()) and bool(((block.q >= block.p) | block.q.isnan()).all())


TOKENS = ["<s>", "When", " Mary", " and", " John", " went", " to"]


@pytest.mark.parametrize("sweep", ["resid_pre", "heads", "heads_by_position"])
def test_patching_heatmaps_carry_the_summarys_ci_p_and_q(llama, pairs, sweep):
    res = activation_patching(llama, *pairs, PatchingConfig(sweep=sweep, **FAST))
    result = PatchRunResult(**(vars(res) | {"position_labels": TOKENS}), position_roles={2: "io", 4: "s1"})
    maps = heatmaps(result.blocks())
    s = result.summary
    if sweep == "heads_by_position":  # [layer, head, pos]: one map per head
        assert [b.name for b in maps] == [f"patching_h{h}" for h in result.axes["head"]]
        for h, block in enumerate(maps):
            assert_cells(block, s, (slice(None), h))
            assert block.cols == [f"{p}:{TOKENS[p]!r}" + {2: " IO", 4: " S1"}.get(p, "") for p in result.axes["pos"]]
        return
    (block,) = maps
    assert_cells(block, s)
    assert block.rows == [f"L{v}" for v in result.axes["layer"]]
    if sweep == "resid_pre":
        assert block.cols[2] == "2:' Mary' IO" and block.cols[4] == "4:' John' S1" and block.cols[1] == "1:'When'"


def test_patching_without_a_summary_leaves_the_cell_statistics_out(llama, pairs):
    clean, corrupt, answers, wrong = (x[:1] for x in pairs)  # one prompt: no CI, no test
    res = activation_patching(llama, clean, corrupt, answers, wrong, PatchingConfig(sweep="heads", **FAST))
    assert res.summary is None
    (block,) = heatmaps(patching_blocks("k", res, "t"))
    assert block.low is block.high is block.p is block.q is None


def test_attribution_path_patching_and_tracing_heatmaps_carry_their_statistics(llama, pairs):
    att = attribution_patching(llama, *pairs, AttributionConfig(nodes="heads", **FAST))
    path = path_patching(llama, *pairs, PathPatchingConfig(receivers=("L2.attn.q[h0]",), **FAST))
    subjects = [[1, 2]] * pairs[0].shape[0]
    trace = causal_tracing(llama, pairs[0], subjects, pairs[2], pairs[3], CausalTracingConfig(**FAST))
    for result in (AttributeResult(**vars(att)), PathPatchResult(**vars(path)), TraceResult(**vars(trace))):
        (block,) = heatmaps(result.blocks())
        assert_cells(block, result.summary)


def test_verified_grid_carries_the_exact_cells_statistics(llama, pairs):
    v = verified_patching(llama, *pairs, VerifiedConfig(sweep="resid_pre", top_k=3, n_random=3, seed=1, **FAST))
    estimate, exact = heatmaps(verified_blocks("patch_resid_pre", v, "verified", {2: "io"}))
    assert estimate.low is None and estimate.p is None  # AtP*'s estimate has no test
    assert exact.name == "patch_resid_pre_exact" and exact.cols == estimate.cols and exact.rows == estimate.rows
    s = v.exact.summary
    names = list(v.axes)
    seen = torch.zeros_like(v.verified)
    for i, (layer, pos) in enumerate(v.cells):
        cell = (v.axes[names[0]].index(layer), v.axes[names[1]].index(pos))
        seen[cell] = True
        for name in ("low", "high", "p", "q"):
            assert getattr(exact, name)[cell] == getattr(s, name)[i]
        assert float(exact.values[cell]) == pytest.approx(float(s.mean[i]))
        assert bool(exact.significant[cell]) == bool(s.significant[i])
    assert torch.equal(seen, v.verified)
    for name in ("low", "high", "p", "q"):  # NaN wherever nothing was patched
        assert bool(getattr(exact, name)[~v.verified].isnan().all())
    assert bool(exact.values[~v.verified].isnan().all())
    figure(exact)  # NaN cells render (blank)


def test_head_and_dla_heatmaps_carry_their_cis(llama, pairs):
    scores = detect_heads(llama, HeadDetectionConfig(n_sequences=4, half_length=4, **FAST))
    heads = HeadsResult(**vars(scores))
    maps = heatmaps(heads.blocks())
    assert [b.name for b in maps] == list(SHOWN)
    for block in maps:
        ci = heads.ci[block.name]
        assert torch.equal(block.low, ci.low) and torch.equal(block.high, ci.high)
        assert block.p is None and block.q is None  # the detectors' CIs come without a test
    clean, _, answers, wrong = pairs
    dla = direct_logit_attribution(llama, clean, answers, wrong, DLAConfig(**FAST))
    result = DLARunResult(**vars(dla))
    (block,) = heatmaps(result.blocks())
    ci = result.summary["heads"]
    assert torch.equal(block.low, ci.low) and torch.equal(block.high, ci.high) and block.p is None
    torch.testing.assert_close(block.values.double(), ci.estimate, atol=1e-6, rtol=0)


def test_lens_reports_a_layer_by_position_grid(tiny_dir, tmp_path):
    from interplab.runs.runner import load_run, run_analysis

    outcome = run_analysis("lens", model=tiny_dir, prompt="the cat sat", top_k=3, out=str(tmp_path), progress=False)
    lens = outcome.result
    (block,) = heatmaps(lens.blocks())
    n = len(lens.grid_tokens)
    assert block.name == "lens_grid" and block.values.shape == (len(lens.layers), n) and n > 3
    assert torch.equal(block.values, lens.grid_prob.float())
    assert block.rows == [f"L{layer}" for layer in lens.layers]
    assert block.cols == [f"{p}:{t!r} → {x!r}" for p, (t, x) in enumerate(zip(lens.grid_tokens, lens.grid_next))]
    assert "".join(lens.grid_tokens).endswith("the cat sat") and lens.grid_next[-1] == lens.final_token
    # the last position's column is the single-position lens the analysis reports
    torch.testing.assert_close(lens.grid_prob[:, -1], lens.final_prob, atol=1e-5, rtol=0)
    assert equal(load_run(outcome.path).result, lens)
    # a record from before the grid: the fields are absent, the report has no grid
    tensors: dict = {}
    tree = encode(lens, tensors)
    for name in ("grid_prob", "grid_tokens", "grid_next"):
        tree.pop(name)
    old = decode(tree, tensors)
    assert old.grid_prob is None and not heatmaps(old.blocks()) and old.blocks()[1].name == "lens_final_prob"


def test_probe_sweep_lines_carry_accuracy_and_selectivity_bands():
    sweep = {"sites": ["L0.resid_post", "L1.resid_post", "L2.resid_post"], "layers": [0, 1, 2],
             "test_accuracy": [0.6, 0.8, 0.9], "test_accuracy_low": [0.5, 0.7, 0.85],
             "test_accuracy_high": [0.7, 0.9, 0.95], "test_auroc": [0.6, 0.85, 0.93],
             "selectivity": [0.1, float("nan"), 0.3], "control_accuracy": [0.5, float("nan"), 0.6],
             "config": {"method": "logistic", "reduction": "last"}}
    result = ProbeRunResult(sweep, "L2.resid_post", "best", selectivity_low=[0.0, float("nan"), 0.2],
                            selectivity_high=[0.2, float("nan"), 0.4], label_names=["neg", "pos"])
    acc, sel = [b for b in result.blocks() if isinstance(b, Lines)]
    assert acc.low["test accuracy"] == sweep["test_accuracy_low"]
    assert acc.high["test accuracy"] == sweep["test_accuracy_high"]
    assert sel.name == "probe_selectivity" and sel.x == [0.0, 2.0]  # the layer without a control is left out
    assert sel.series == {"selectivity": [0.1, 0.3]}
    assert sel.low == {"selectivity": [0.0, 0.2]} and sel.high == {"selectivity": [0.2, 0.4]}


def test_steering_reports_bands_side_effects_and_a_samples_table():
    scales = torch.tensor([-1.0, 0.0, 1.0])
    sweep = {"scales": scales, "scores": torch.zeros(2, 3), "mean": torch.tensor([-0.5, 0.0, 0.5]),
             "low": torch.tensor([-0.7, -0.1, 0.3]), "high": torch.tensor([-0.3, 0.1, 0.7]),
             "kl": torch.tensor([0.2, 0.0, 0.3]), "perplexity": torch.tensor([12.0, 10.0, 13.0]),
             "output_length": torch.ones(2, 3)}
    result = SteerRunResult({"estimate": 0.5, "low": 0.4, "high": 0.6}, 0.0, [0.0, 0.1], sweep,
                            samples={-1.0: [" sad", " bad"], 0.0: [" ok", " fine"], 1.0: [" great", " good"]},
                            prompts=["I think", "The day", "Overall"], vector_norm={"L0.resid_post": 1.0},
                            label_names=["neg", "pos"])
    blocks = result.blocks()
    lines = {b.name: b for b in blocks if isinstance(b, Lines)}
    assert set(lines) == {"steer_score", "steer_kl", "steer_perplexity"}
    score = lines["steer_score"]
    assert score.x == scales.tolist() and score.low["probe score"] == sweep["low"].tolist()
    assert score.high["probe score"] == sweep["high"].tolist()
    assert lines["steer_kl"].series == {"KL": sweep["kl"].tolist()}
    assert lines["steer_perplexity"].series == {"perplexity": sweep["perplexity"].tolist()}
    assert not lines["steer_kl"].low  # a record from before the side effects' CIs: no band
    sweep.update(kl_low=torch.tensor([0.125, 0.0, 0.25]), kl_high=torch.tensor([0.375, 0.0, 0.5]),
                 perplexity_low=torch.tensor([11.0, 9.5, 12.0]), perplexity_high=torch.tensor([13.0, 10.5, 14.0]))
    lines = {b.name: b for b in result.blocks() if isinstance(b, Lines)}
    assert lines["steer_kl"].low == {"KL": [0.125, 0.0, 0.25]} and lines["steer_kl"].high["KL"][2] == 0.5
    assert lines["steer_perplexity"].low == {"perplexity": [11.0, 9.5, 12.0]}
    assert lines["steer_perplexity"].high == {"perplexity": [13.0, 10.5, 14.0]}
    table = next(b for b in blocks if isinstance(b, Table) and b.header == ["scale", "prompt", "continuation"])
    assert table.rows[0] == ["-1", "I think", " sad"] and table.rows[1] == ["-1", "The day", " bad"]
    assert table.rows[-1] == ["+1", "The day", " good"] and len(table.rows) == 6


@pytest.fixture(scope="module")
def circuit_rows():
    from interplab.groundtruth.bench_circuits import circuit_rows

    return circuit_rows(True, 1)


def test_bench_draws_each_circuit_with_its_scores_and_the_planted_truth(circuit_rows):
    from interplab.analyses.circuits import EAPConfig, ExactConfig, eap, exact_edge_patching
    from interplab.groundtruth.bench_circuits import CUT, _task
    from interplab.groundtruth.bench_run import BenchResult
    from interplab.groundtruth.planted import induction_model

    result = BenchResult(circuit_rows, True, 1)
    graphs = [b for b in result.blocks() if isinstance(b, Graph)]
    scored = [r for r in circuit_rows if "circuit" in r.extra]
    assert len(graphs) == len(scored) == 6  # 2 planted circuits × exact, EAP, EAP-IG
    for g, r in zip(graphs, scored):
        c = r.extra["circuit"]
        assert g.scores == c.scores and g.low == c.low and g.high == c.high and g.truth == c.truth
        assert [g.nodes[s] for s in g.sources] == [e[0] for e in c.edges]
        assert [g.nodes[t] for t in g.targets] == [e[1] for e in c.edges]
        assert all(lo <= v + 1e-6 and v <= hi + 1e-6 for v, lo, hi in zip(g.scores, g.low, g.high))
        assert g.threshold == pytest.approx(CUT * max(abs(v) for v in g.scores))
        assert g.layers[g.nodes.index("embed")] == -1 == min(g.layers)
        assert g.layers[g.nodes.index("logits")] == (2 if "induction" in r.model else 1) == max(g.layers)
    # the stored scores and truth are the method's own and the planted model's
    planted = induction_model(vocab=8, n_ctx=9, n_distractors=3)
    model, task = HookedModel(planted.model), _task(8, 9, 16)
    truth = {tuple(e) for e in planted.truth.edges}
    for method, run in (("exact edge patching", lambda: exact_edge_patching(model, task, ExactConfig(ablation="zero"))),
                        ("EAP", lambda: eap(model, task, EAPConfig(ablation="zero", metric="loss")))):
        (row,) = [r for r in scored if r.method == method and r.model.startswith("planted induction")]
        scores = run()
        assert row.extra["circuit"].scores == scores.scores.tolist()
        assert row.extra["circuit"].edges == [list(e) for e in scores.edges]
        assert row.extra["circuit"].truth == [e in truth for e in scores.edges]
        assert sum(row.extra["circuit"].truth) == len(truth)
    # exact patching's cut keeps exactly the planted induction circuit
    exact = next(g for g in graphs if g.title.startswith("exact edge patching on planted induction"))
    shown = [t for v, t in zip(exact.scores, exact.truth) if abs(v) >= exact.threshold]
    assert all(shown) and len(shown) == len(truth)


def test_bench_circuits_survive_the_record_and_render(circuit_rows):
    from interplab.groundtruth.bench_run import BenchResult

    result = BenchResult(circuit_rows, True, 1)
    tensors: dict = {}
    back = decode(encode(result, tensors), tensors)
    assert equal(back, result)
    assert [b for b in back.blocks() if isinstance(b, Graph)] == [b for b in result.blocks() if isinstance(b, Graph)]
    g = next(b for b in result.blocks() if isinstance(b, Graph))
    fig = figure(g)
    drawn = [p for p in fig.axes[0].patches if p.get_gid() == "edge"]
    assert len(drawn) == sum(abs(v) >= g.threshold for v in g.scores)
    # a leaderboard from before the circuits were kept: no graphs, the rest unchanged
    old = BenchResult([r for r in circuit_rows if "circuit" not in r.extra], True, 1)
    assert not [b for b in old.blocks() if isinstance(b, Graph)]
