"""AtP* (QK fix, GradDrop) and verified sweeps: the properties they claim.

* (a) at a saturated softmax plain AtP gives a head's query / key ~0 while patching them moves
  the metric a lot; the QK fix is exact wherever the model is linear after the pattern (planted
  induction head; a GQA + rotary Llama's last layer); replayed patterns equal the forward's;
* (b) on the planted circuits, a verified sweep with a budget of as many cells as the exact
  sweep finds finds every truth cell it finds; AtP* misses the head upstream of the saturated
  one (as the paper's does), and the random sample reports that miss;
* (c) verified cells' effects equal the exact sweep's (and the naive loop's) cell by cell;
* (d) GradDrop: dropping an upstream layer changes nothing; dropping the last layer leaves the
  direct path, checked against the gradient at the last residual stream.
"""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.atp_qk import captured_attention, replay_pattern
from interplab.analyses.atp_star import AtPStarConfig, atp_star
from interplab.analyses.attribution_engine import PromptMetric
from interplab.analyses.patching import PatchingConfig, activation_patching
from interplab.analyses.verified import VerifiedConfig, exceed_bound, verified_patching
from interplab.core.errors import ConfigError
from interplab.core.sites import Site, SiteKind
from interplab.groundtruth.planted import induction_model, induction_task, successor_model
from interplab.interventions import Patch
from interplab.runtime import HookedModel

from .families import ForwardCounter, assert_clean, tokens
from .test_attribution import tiny_llama

VOCAB, N_CTX, N = 8, 9, 24
FAST = dict(n_resamples=200)


@pytest.fixture(scope="module")
def planted():
    p = induction_model(vocab=VOCAB, n_ctx=N_CTX, n_distractors=3)
    return p, HookedModel(p.model)


@pytest.fixture(scope="module")
def task():
    """Induction prompts [BOS, s, s]; corrupt: the repeated half replaced by random tokens."""
    clean = induction_task(VOCAB, N_CTX, N, seed=1).tokens
    corrupt = clean.clone()
    corrupt[:, 5:] = torch.randint(1, VOCAB, (N, 4), generator=torch.Generator().manual_seed(7))
    return clean, corrupt, clean[:, 1], clean[:, 2]


@pytest.fixture(scope="module")
def llama_task():
    clean = tokens(5, 7, seed=3)
    corrupt = clean.clone()
    corrupt[:, 1], corrupt[:, 4] = tokens(5, seed=4), tokens(5, seed=5)
    answers, wrong = tokens(5, seed=6), tokens(5, seed=7)
    return clean, corrupt, answers, torch.where(wrong == answers, 3 + (answers - 2) % 29, wrong)


def change(exact) -> torch.Tensor:
    base = exact.corrupt_metric if exact.config.direction == "denoising" else exact.clean_metric
    return exact.raw - base.view(-1, *[1] * (exact.raw.ndim - 1))


# -- (a) the QK fix ----------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("sweep", ["queries", "keys"])
def test_qk_fix_recovers_the_saturated_induction_head(planted, task, sweep, direction):
    """Attention-only, no norm: the metric is linear in every pattern of the last layer, and
    layer 0's q / k read positions only (equal in clean and corrupt): the QK fix is exact on
    the whole grid. Plain AtP linearises through L1.h1's saturated softmax."""
    _, model = planted
    cfg = dict(sweep=sweep, direction=direction, **FAST)
    exact = activation_patching(model, *task, PatchingConfig(**cfg))
    est = atp_star(model, *task, AtPStarConfig(**cfg))
    torch.testing.assert_close(est.delta.double(), change(exact).double(), atol=1e-4, rtol=0)
    torch.testing.assert_close(est.effects, exact.effects, atol=1e-5, rtol=0)
    denom = float(exact.clean_metric.mean() - exact.corrupt_metric.mean())
    size = float(change(exact)[:, 1, 1].abs().mean()) / abs(denom)
    plain = float(est.plain_delta[:, 1, 1].abs().mean()) / abs(denom)
    print(f"{sweep} {direction}: L1.h1 exact magnitude {size:.3f}, plain AtP {plain:.2e}, "
          f"AtP* score {float(est.score[1, 1]):.3f}")
    assert size > 0.1
    if direction == "noising":  # the clean pattern is saturated: plain AtP sees nothing
        assert plain < 1e-6 and size > 0.2
    assert est.passes == {"forward": 2, "backward": 1, "attention_calls": 4}
    assert_clean(model)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("sweep", ["queries", "keys"])
def test_qk_fix_is_exact_where_the_model_is_linear_after_the_pattern(llama_task, sweep, direction):
    """Last layer of a GQA + rotary Llama whose last MLP and final norm are linear: the QK fix
    equals exact patching, plain AtP does not (it linearises the softmax)."""
    model = HookedModel(tiny_llama(linear_head=True))
    cfg = dict(sweep=sweep, direction=direction, layers=(2,), **FAST)
    exact = activation_patching(model, *llama_task, PatchingConfig(**cfg))
    est = atp_star(model, *llama_task, AtPStarConfig(**cfg))
    assert est.delta.shape == (5, 1, 4 if sweep == "queries" else 2)
    torch.testing.assert_close(est.delta.double(), change(exact).double(), atol=1e-4, rtol=0)
    assert (est.plain_delta - est.delta).abs().max() > 1e-3
    assert change(exact).abs().max() > 1e-2


def test_replayed_patterns_equal_the_full_forward(model, family):
    """Every family: the attention module called alone on its captured inputs gives the
    forward's pattern, and with every head's q (or k) patched gives the patched forward's."""
    clean, corrupt = tokens(2, 9, seed=1), tokens(2, 9, seed=2)
    last = family.n_layers - 1
    pattern = Site(last, SiteKind.PATTERN)
    with captured_attention(model, [last]) as calls:
        _, base = model.run_with_cache(corrupt, [pattern])
    torch.testing.assert_close(replay_pattern(model, last, calls[last]), base.acts[pattern],
                               atol=1e-6, rtol=0)
    for kind in (SiteKind.Q, SiteKind.K):
        site = Site(last, kind)
        _, src = model.run_with_cache(clean, [site])
        _, patched = model.run_with_cache(corrupt, [pattern], [Patch(site, value=src.acts[site])])
        again = replay_pattern(model, last, calls[last], site, src.acts[site])
        torch.testing.assert_close(again, patched.acts[pattern], atol=1e-6, rtol=0)
        assert (again - base.acts[pattern]).abs().max() > 1e-4  # GPT-2 init: small scores
    est = atp_star(model, clean, corrupt, torch.tensor([5, 6]), torch.tensor([7, 8]),
                   AtPStarConfig(sweep="keys", layers=(last,), grad_drop=True))  # A @ v == z checked
    assert est.delta.shape == (2, 1, family.n_kv_heads)
    # GradDrop: dropping an upstream layer leaves the last layer's gradients alone; its own
    # layer is left out.
    for dropped in range(last):
        torch.testing.assert_close(est.drop_delta[dropped], est.delta, atol=1e-6, rtol=1e-5)
    assert torch.isnan(est.drop_delta[last]).all() and est.passes["backward"] == 1 + last
    assert_clean(model)


@pytest.mark.parametrize("sweep", ["queries", "keys", "values"])
def test_head_input_sweeps_batched_equal_the_naive_loop(model, family, sweep):
    clean, corrupt = tokens(3, 9, seed=1), tokens(3, 9, seed=2)
    ans, wrong = torch.tensor([5, 6, 7]), torch.tensor([8, 9, 10])
    kw = dict(sweep=sweep, direction="noising", max_rows=5, **FAST)
    fast = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(**kw))
    slow = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(naive=True, **kw))
    torch.testing.assert_close(fast.raw, slow.raw, atol=1e-5, rtol=1e-5)
    heads = family.n_heads if sweep == "queries" else family.n_kv_heads
    assert fast.axes == {"layer": list(range(family.n_layers)), "head": list(range(heads))}


# -- (b) verified sweeps on the planted circuits ----------------------------------------------
def _found(exact, null: float) -> set[tuple[int, ...]]:
    """Cells the exact sweep finds: patching them moves the metric, per prompt, by at least
    5% of the clean-corrupt gap on average (mean |effect − null|; the sign of the change may
    vary by prompt, so the mean effect alone would hide some)."""
    hit = (exact.effects - null).abs().mean(0) >= 0.05
    return {tuple(int(v[i]) for v, i in zip(exact.axes.values(), idx)) for idx in hit.nonzero().tolist()}


@pytest.mark.parametrize("grad_drop", [False, True])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("sweep", ["queries", "keys"])
def test_verified_finds_every_truth_cell_the_exact_sweep_finds(planted, task, sweep, direction, grad_drop):
    """The budget is exactly as many cells as the exact sweep finds (of 8), no random ones:
    AtP*'s ranking alone must put them first."""
    p, model = planted
    null = 0.0 if direction == "denoising" else 1.0
    exact = activation_patching(model, *task, PatchingConfig(sweep=sweep, direction=direction, **FAST))
    found = _found(exact, null)
    truth = {(int(n[1]), int(n[4])) for n in p.truth.nodes if n.startswith("L")}  # "L1.h1"
    assert found and found <= truth, found
    res = verified_patching(model, *task, VerifiedConfig(
        sweep=sweep, direction=direction, top_k=len(found), n_random=0, grad_drop=grad_drop, **FAST))
    assert {tuple(c) for c in res.cells} >= found
    assert int(res.verified.sum()) == len(found) and res.n_unverified == 8 - len(found)


def test_verified_finds_the_planted_successor_mlp():
    p = successor_model(vocab=8, n_ctx=8, n_distractors=2, length=3)
    model = HookedModel(p.model)
    clean = tokens(12, 3, seed=1) % 8
    corrupt = clean.clone()
    corrupt[:, -1] = (clean[:, -1] + 3) % 8
    ans, wrong = (clean[:, -1] + 1) % 8, (corrupt[:, -1] + 1) % 8
    exact = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(sweep="mlp_out", **FAST))
    assert _found(exact, 0.0) == {(0, 2)}
    res = verified_patching(model, clean, corrupt, ans, wrong,
                            VerifiedConfig(sweep="mlp_out", top_k=1, n_random=0, **FAST))
    assert res.cells == [[0, 2]] and float(res.effects[0, 2]) == pytest.approx(1.0, abs=1e-5)


def test_upstream_of_a_saturated_head_is_missed_and_the_sample_reports_it(planted, task):
    """L0.h1 writes the keys L1.h1 reads through a saturated softmax: AtP* (like the paper's)
    scores it 0 although noising it costs ~0.2 of the effect; a random sample of the rest finds
    it as the largest missed effect."""
    _, model = planted
    cfg = VerifiedConfig(sweep="heads", direction="noising", top_k=1, n_random=7, **FAST)
    res = verified_patching(model, *task, cfg)
    est, magnitude = res.estimate, res.exact_magnitude
    assert float(est.score[0, 1]) < 1e-6 and float(magnitude[0, 1]) > 0.15
    assert res.cells[0] == [1, 1] and bool(res.sampled[0, 1])
    assert res.missed_max == pytest.approx(float(magnitude[0, 1]), abs=1e-6)
    assert res.missed_exceed == 0 and res.n_unverified == 0
    assert res.rank_corr is not None and -1 <= res.rank_corr <= 1
    assert float(res.rank_corr_ci.low) <= res.rank_corr <= float(res.rank_corr_ci.high)


# -- (c) verified cells are the exact sweep's --------------------------------------------------
@pytest.mark.parametrize("sweep,extra", [("heads", {}), ("resid_pre", {"positions": (1, 4, -1)}),
                                         ("heads_by_position", {"positions": (4, 6)})])
def test_verified_cells_equal_the_exact_sweep(llama_task, sweep, extra):
    model = HookedModel(tiny_llama())
    cfg = dict(sweep=sweep, direction="noising", **extra, **FAST)
    full = activation_patching(model, *llama_task, PatchingConfig(**cfg))
    res = verified_patching(model, *llama_task, VerifiedConfig(top_k=3, n_random=3, seed=1, **cfg))
    assert res.axes == full.axes and len(res.cells) == 6
    for i, cell in enumerate(res.cells):
        idx = tuple(v.index(c) for v, c in zip(full.axes.values(), cell))
        ref = full.effects[(slice(None), *idx)]
        torch.testing.assert_close(res.exact.effects[:, i], ref, atol=1e-5, rtol=0)
        assert float(res.effects[idx]) == pytest.approx(float(ref.mean()), abs=1e-5)
    assert int(res.verified.sum()) == 6 and int(res.sampled.sum()) == 3
    assert torch.isnan(res.effects[~res.verified]).all()
    naive = activation_patching(model, *llama_task, PatchingConfig(naive=True, **cfg), cells=res.cells)
    torch.testing.assert_close(naive.raw, res.exact.raw, atol=1e-5, rtol=1e-5)
    s = res.exact.summary
    assert s.q.shape == (6,) and bool((s.low <= s.mean).all() and (s.mean <= s.high).all())
    assert res.missed_max is not None and res.missed_exceed == exceed_bound(res.n_unverified + 3, 3, 0.95)
    assert_clean(model)


def test_missed_effect_bounds_with_a_sample_of_twenty(llama_task):
    """21 resid_pre cells, the top one and 19 of the other 20 sampled: the conformal rank
    ceil(20 * 0.95) = 19 exists, so the bound is given; it is at least the largest missed."""
    model, cfg = HookedModel(tiny_llama()), dict(top_k=1, **FAST)
    res = verified_patching(model, *llama_task, VerifiedConfig(n_random=19, **cfg))
    s_exact = res.exact_magnitude[res.sampled].double()
    s_score = res.estimate.score[res.sampled].double()
    q = float(torch.sort(s_exact - s_score).values[18])
    unverified = float(res.estimate.score[~res.verified].max())
    assert res.missed_max == pytest.approx(float(s_exact.max()), abs=1e-6)
    assert res.missed_bound == pytest.approx(max(res.missed_max, unverified + q), abs=1e-6)
    assert res.missed_exceed == exceed_bound(20, 19, 0.95) == 0 and res.n_unverified == 1  # miss: 1/20
    assert res.rank_corr > 0.5  # AtP orders this model's residual cells well
    small = verified_patching(model, *llama_task, VerifiedConfig(n_random=5, **cfg))
    assert small.missed_bound is None and small.missed_max is not None


def test_modes_and_refusals(llama_task):
    model = HookedModel(tiny_llama())
    exact = verified_patching(model, *llama_task, VerifiedConfig(mode="exact", **FAST))
    ref = activation_patching(model, *llama_task, PatchingConfig(**FAST))
    torch.testing.assert_close(exact.effects, ref.effects.mean(0), atol=0, rtol=0)
    assert bool(exact.verified.all()) and exact.estimate is None
    est = verified_patching(model, *llama_task, VerifiedConfig(mode="attribution", **FAST))
    assert est.exact is None and not bool(est.verified.any())
    torch.testing.assert_close(est.effects, est.estimate.effects.mean(0))
    with pytest.raises(ConfigError, match="mode='fast' is not one of"):
        VerifiedConfig(mode="fast")
    with pytest.raises(ConfigError, match="A verified sweep patches top_k \\+ n_random cells"):
        VerifiedConfig(top_k=0, n_random=0)
    with pytest.raises(ConfigError, match=r"Cell \(3, 0\) is not in this sweep's grid \(layer/head "
                                          r"coordinates from \{layer: \[0, 1, 2\], head: \[0, 1, 2, 3\]\}\)"):
        activation_patching(model, *llama_task, PatchingConfig(sweep="heads"), cells=[(3, 0)])
    with pytest.raises(ConfigError, match="cells must list at least one cell, each once"):
        activation_patching(model, *llama_task, PatchingConfig(sweep="heads"), cells=[(1, 0), (1, 0)])
    assert [exceed_bound(10, m, 0.95) for m in (0, 3, 10)] == [10, 5, 0]
    sdpa = HookedModel(tiny_llama())
    sdpa.hf.config._attn_implementation = "sdpa"
    counter = ForwardCounter(sdpa.hf)  # a throwaway model: no need to remove it on failure
    with pytest.raises(ConfigError, match="The QK fix recomputes attention patterns, which the "
                                          "'sdpa' attention kernel does not return"):
        atp_star(sdpa, *llama_task, AtPStarConfig(sweep="queries"))
    assert counter.calls == 0


# -- (d) GradDrop -------------------------------------------------------------------------------
def test_grad_drop_upstream_changes_nothing_and_the_last_drop_leaves_the_direct_path(llama_task):
    model = HookedModel(tiny_llama())
    clean, corrupt, answers, wrong = llama_task
    res = atp_star(model, *llama_task, AtPStarConfig(sweep="mlp_out", direction="denoising",
                                                     grad_drop=True))
    drops, delta = res.drop_delta, res.delta  # [3, n, layer, pos], [n, layer, pos]
    assert res.passes["backward"] == 4
    # Layer 2's cells: dropping layer 0 or 1 (upstream) leaves their gradient alone; their own
    # layer is left out, so the score is plain |AtP|.
    for dropped in (0, 1):
        torch.testing.assert_close(drops[dropped][:, 2], delta[:, 2], atol=1e-6, rtol=0)
        assert torch.isnan(drops[dropped][:, dropped]).all()  # its own layer: left out
    denom = float((res.clean_metric.mean() - res.corrupt_metric.mean()).abs())
    torch.testing.assert_close(res.score[2], delta[:, 2].abs().mean(0) / denom, atol=1e-6, rtol=0)
    # Layer 1's cells with layer 2 dropped: only the skip path to the logits is left, i.e.
    # (a_clean − a_corrupt) . dM/d(resid_post of the last layer).
    mlp1, final = Site(1, SiteKind.MLP_OUT), Site(2, SiteKind.RESID_POST)
    _, src = model.run_with_cache(clean, [mlp1])
    metric = PromptMetric("logit_diff", answers, wrong, None)
    g = model.gradients(corrupt, metric, [mlp1, final])
    direct = ((src.acts[mlp1] - g.acts[mlp1]) * g.grads[final]).sum(-1)
    torch.testing.assert_close(drops[2][:, 1], direct, atol=1e-5, rtol=0)
    assert (direct - delta[:, 1]).abs().max() > 1e-3  # the path through layer 2 mattered
    expected = (drops[0][:, 1].abs() + drops[2][:, 1].abs()).mean(0) / 2 / denom
    torch.testing.assert_close(res.score[1], expected.float(), atol=1e-6, rtol=0)
    assert_clean(model)
