"""Attribution patching: the properties it claims, on tiny random models.

* where the metric is linear in the nodes, attribution (and IG) equals exact patching;
* integrated gradients of one node converge to its exact patching effect as m grows (every
  family), and on a nonlinear model m=16 beats m=1 for every node kind;
* one backward of the summed metric gives every prompt's own gradient;
* the cost is 2F+1B (attribution) and 2F+m(F+B) (IG); nothing is left attached;
* KL noising gives zeros, not NaN; configs are refused before any forward, with pinned messages.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import nn

from interplab.analyses.attribution import AttributionConfig, attribution_patching, compare_with
from interplab.analyses.attribution_engine import PromptMetric, node_sites
from interplab.analyses.metrics import answer_metric
from interplab.core.errors import ConfigError, InputError, SiteError
from interplab.core.sites import Site, SiteKind
from interplab.interventions import Patch
from interplab.runtime import HookedModel

from .families import FAMILIES, ForwardCounter, assert_clean, tokens

N, POS = 5, 7


def tiny_llama(linear_head: bool = False, seed: int = 0) -> nn.Module:
    """3 layers, 4 query / 2 key-value heads, weights large enough to be nonlinear.

    ``linear_head``: the last layer's attention output reaches the last-position logits through
    linear maps only -- the final RMSNorm and the last MLP's norm become identities and the last
    MLP a plain linear map -- so the metric logit_diff is linear in that layer's ``attn.z`` and
    ``mlp_out`` (attention at the last layer has nothing after it to mix positions).
    """
    torch.manual_seed(seed)
    config = tf.LlamaConfig(
        vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, attn_implementation="eager",
        initializer_range=0.15,  # HF's 0.02 makes a nearly linear model with tiny effects
    )
    hf = tf.LlamaForCausalLM(config).eval()
    if linear_head:
        last = hf.model.layers[-1]
        hf.model.norm = nn.Identity()
        last.post_attention_layernorm = nn.Identity()
        last.mlp = nn.Linear(64, 64, bias=False)
        nn.init.normal_(last.mlp.weight, std=0.15)
    return hf


@pytest.fixture(scope="module")
def llama() -> HookedModel:
    return HookedModel(tiny_llama())


@pytest.fixture(scope="module")
def linear_llama() -> HookedModel:
    return HookedModel(tiny_llama(linear_head=True))


@pytest.fixture(scope="module")
def task():
    """N prompt pairs of POS tokens differing at two positions, with answer / wrong ids."""
    clean = tokens(N, POS, seed=3)
    corrupt = clean.clone()
    corrupt[:, 1] = tokens(N, seed=4)
    corrupt[:, 4] = tokens(N, seed=5)
    answers, wrong = tokens(N, seed=6), tokens(N, seed=7)
    wrong = torch.where(wrong == answers, 3 + (answers - 2) % 29, wrong)  # never the answer
    return clean, corrupt, answers, wrong


def by_hand(model, clean, corrupt, answers, wrong, site: Site, direction="denoising", metric="logit_diff"):
    """Exact effect (raw metric change from the base run) of patching one whole site at every
    position, per prompt: the reference written without the analysis code."""
    base, source = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
    clean_last = model.run(clean)[:, -1]
    _, cache = model.run_with_cache(source, [Site(site.layer, site.kind)])
    value = cache.acts[Site(site.layer, site.kind)]
    if site.head is not None:
        value = value[:, :, site.head]
    patched = model.run(base, [Patch(site, value=value)])[:, -1]
    unpatched = model.run(base)[:, -1]
    return (answer_metric(metric, patched, answers, wrong, clean_last)
            - answer_metric(metric, unpatched, answers, wrong, clean_last))


# -- (1) linear between node and metric: attribution is exact -----------------------------------
@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("method,path", [("attribution", "activations"), ("ig", "activations"),
                                         ("ig", "inputs")])
def test_equals_exact_where_linear(linear_llama, task, direction, method, path):
    model, last = linear_llama, 2
    common = dict(direction=direction, method=method, ig_path=path, ig_steps=3, layers=(last,),
                  n_resamples=100)
    mlp = attribution_patching(model, *task, AttributionConfig(nodes="mlp", **common))
    exact = by_hand(model, *task, Site(last, SiteKind.MLP_OUT), direction)
    torch.testing.assert_close(mlp.delta[:, 0], exact, atol=1e-4, rtol=0)
    assert exact.abs().max() > 1e-2  # not vacuous

    heads = attribution_patching(model, *task, AttributionConfig(nodes="heads", compare_exact=True, **common))
    assert heads.axes == heads.exact.axes == {"layer": [last], "head": [0, 1, 2, 3]}
    torch.testing.assert_close(heads.effects, heads.exact.effects, atol=1e-4, rtol=0)
    for h in range(4):
        ref = by_hand(model, *task, Site(last, SiteKind.Z, h), direction)
        torch.testing.assert_close(heads.delta[:, 0, h], ref, atol=1e-4, rtol=0)
    assert heads.pearson > 0.9999 and heads.kendall == pytest.approx(1.0)


def test_not_exact_where_nonlinear(llama, task):
    """The control: with the final RMSNorm in place the same estimate is off."""
    for site, nodes in ((Site(2, SiteKind.MLP_OUT), "mlp"), (Site(2, SiteKind.Z, 1), "heads")):
        r = attribution_patching(llama, *task, AttributionConfig(nodes=nodes, layers=(2,), n_resamples=100))
        estimate = r.delta[:, 0] if nodes == "mlp" else r.delta[:, 0, 1]
        assert (estimate - by_hand(llama, *task, site)).abs().max() > 1e-2


# -- (2) integrated gradients converge ----------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES, ids=str)
def test_ig_of_one_node_converges_to_exact(family, task):
    """With one node interpolated the path integral is exact patching; the right Riemann sum's
    error falls like 1/m (every family, first and last layer)."""
    torch.manual_seed(0)
    model = HookedModel(family.model_cls(family.config(attn_implementation="eager",
                                                       initializer_range=0.15)).eval())
    for layer in (0, family.n_layers - 1):
        exact = by_hand(model, *task, Site(layer, SiteKind.MLP_OUT))
        errors = []
        for m in (1, 4, 16):
            cfg = AttributionConfig(nodes="mlp", method="ig", ig_steps=m, layers=(layer,), n_resamples=100)
            errors.append(float((attribution_patching(model, *task, cfg).delta[:, 0] - exact).abs().max()))
        assert errors[0] > 1e-3, f"layer {layer}: vacuous, {errors}"
        assert errors[2] < errors[1] < errors[0], f"layer {layer}: {errors}"
        assert errors[2] < 0.25 * errors[0], f"layer {layer}: {errors}"


@pytest.mark.parametrize("nodes", ["heads", "mlp", "resid_pre"])
@pytest.mark.parametrize("path", ["activations", "inputs"])
def test_ig_beats_one_step_on_a_nonlinear_model(llama, task, nodes, path):
    def error(m):
        cfg = AttributionConfig(nodes=nodes, method="ig", ig_steps=m, ig_path=path,
                                compare_exact=True, n_resamples=100)
        r = attribution_patching(llama, *task, cfg)
        return float((r.effects - r.exact.effects).abs().mean())

    e1, e16 = error(1), error(16)
    assert e16 < e1, (e1, e16)


def test_ig_gradient_reaches_every_layer(llama, task):
    """Interpolating every resid_pre at once must not cut the paths between them (a plain
    replacement would leave every layer but the last with a zero gradient)."""
    r = attribution_patching(llama, *task, AttributionConfig(nodes="resid_pre", method="ig", n_resamples=100))
    for layer in range(3):
        assert r.delta[:, layer].abs().max() > 1e-3, layer


# -- (3) one summed backward = per-prompt backwards ---------------------------------------------
@pytest.mark.parametrize("metric", ["logit_diff", "prob", "kl"])
def test_summed_backward_is_per_prompt(llama, task, metric):
    clean, corrupt, answers, wrong = task
    sites = node_sites("heads", [0, 2]) + node_sites("resid_pre", [1])
    clean_last = llama.run(clean)[:, -1]
    together = llama.gradients(corrupt, PromptMetric(metric, answers, wrong, clean_last), sites)
    for i in range(N):
        one = slice(i, i + 1)
        alone = llama.gradients(corrupt[one], PromptMetric(metric, answers[one], wrong[one],
                                                           clean_last[one]), sites)
        for s in sites:
            torch.testing.assert_close(together.grads[s][one], alone.grads[s], atol=1e-6, rtol=1e-5)
            assert alone.grads[s].abs().max() > 0
    full = attribution_patching(llama, *task, AttributionConfig(nodes="heads", metric=metric, n_resamples=100))
    for i in range(N):
        one = slice(i, i + 1)
        r = attribution_patching(llama, clean[one], corrupt[one], answers[one], wrong[one],
                                 AttributionConfig(nodes="heads", metric=metric))
        torch.testing.assert_close(r.delta, full.delta[one], atol=1e-5, rtol=1e-5)
        assert r.summary is None  # one prompt: no intervals


# -- scale, cost, hygiene -----------------------------------------------------------------------
def test_effects_on_patching_scale(llama, task):
    cfg = AttributionConfig(nodes="resid_pre", positions=(1, -1), compare_exact=True, ci_over="prompts",
                            n_resamples=200)
    r = attribution_patching(llama, *task, cfg)
    assert r.effects.shape == r.exact.effects.shape == (N, 3, 2)
    assert r.axes == r.exact.axes == {"layer": [0, 1, 2], "pos": [1, POS - 1]}
    # The same baselines as patching; and at layer 0 of the last (uncorrupted) position nothing
    # differs, so the estimate is exactly "no change" and equals patching there prompt by prompt.
    torch.testing.assert_close(r.clean_metric, r.exact.clean_metric, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.corrupt_metric, r.exact.corrupt_metric, atol=1e-5, rtol=0)
    assert (r.delta[:, 0, 1] == 0).all()
    torch.testing.assert_close(r.effects[:, 0, 1], r.exact.effects[:, 0, 1], atol=1e-5, rtol=0)
    assert abs(float(r.effects[:, 0, 1].mean())) < 1e-5
    torch.testing.assert_close(r.summary.mean, r.effects.mean(0).double(), atol=1e-6, rtol=0)
    for name in ("pearson", "kendall"):
        ci = getattr(r, f"{name}_ci")
        assert ci.method == "percentile" and ci.n == N
        assert float(ci.low) <= getattr(r, name) <= float(ci.high)


def test_compare_with_an_exact_sweep_run_once(llama, task):
    """compare_with(result, exact) is compare_exact with the sweep run by the caller; the cells
    must match."""
    both = attribution_patching(llama, *task, AttributionConfig(compare_exact=True, n_resamples=200))
    alone = attribution_patching(llama, *task, AttributionConfig(n_resamples=200))
    assert alone.exact is None and alone.pearson is None
    joined = compare_with(alone, both.exact)
    assert joined.pearson == both.pearson and joined.kendall == both.kendall
    assert float(joined.pearson_ci.low) == float(both.pearson_ci.low)
    assert both.pearson_ci.method == "bca" and both.pearson_ci.n == 12  # 3 layers x 4 heads
    assert -1 <= both.kendall <= 1 and float(both.kendall_ci.low) <= both.kendall
    fewer = attribution_patching(llama, *task, AttributionConfig(layers=(0, 1), n_resamples=200))
    with pytest.raises(InputError) as err:
        compare_with(fewer, both.exact)
    assert ("The exact sweep covers other cells: axes {layer: 3, head: 4} and effects (5, 3, 4), "
            "against {layer: 2, head: 4} and (5, 2, 4).") in str(err.value)


@pytest.mark.parametrize("method,passes", [("attribution", 2), ("ig", 2 + 4)])
def test_cost_and_no_leftovers(llama, task, method, passes):
    counter = ForwardCounter(llama.hf)
    try:
        r = attribution_patching(llama, *task, AttributionConfig(method=method, ig_steps=4, n_resamples=100))
    finally:
        counter.remove()
    assert counter.calls == passes == r.passes["forward"]
    assert r.passes["backward"] == (1 if method == "attribution" else 4)
    assert_clean(llama)
    assert all(p.requires_grad for p in llama.hf.parameters())


def test_kl_noising_gives_zeros_not_nan(llama, task):
    """KL(clean || run) is minimal on the clean run: every gradient there is ~0 (documented)."""
    r = attribution_patching(llama, *task, AttributionConfig(
        nodes="heads", direction="noising", metric="kl", compare_exact=True, n_resamples=100))
    assert torch.isfinite(r.effects).all() and torch.isfinite(r.delta).all()
    assert r.delta.abs().max() < 1e-5
    torch.testing.assert_close(r.effects, torch.ones_like(r.effects), atol=1e-4, rtol=0)
    assert (1 - r.exact.effects).abs().max() > 1e-2  # what it misses
    ig = attribution_patching(llama, *task, AttributionConfig(
        nodes="heads", direction="noising", metric="kl", method="ig", n_resamples=100))
    assert ig.delta.abs().max() > 1e-3


# -- (4) configs refused, messages pinned -------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(nodes="edges"), "Unknown nodes 'edges'. Valid: 'heads', 'mlp', 'resid_pre'."),
    (dict(direction="both"), "Unknown direction 'both'. Valid: 'denoising', 'noising'."),
    (dict(method="eap"), "Unknown method 'eap'. Valid: 'attribution', 'ig'."),
    (dict(ig_path="edges"), "Unknown ig_path 'edges'. Valid: 'activations', 'inputs'."),
    (dict(ci_over="layers"), "Unknown ci_over 'layers'. Valid: 'cells', 'prompts'."),
    (dict(metric="acc"), "Unknown metric 'acc'. Valid metrics: 'logit_diff', 'prob', 'loss', 'kl'."),
    (dict(ig_steps=0), "ig_steps must be an integer >= 1, got 0."),
    (dict(ig_steps=2.5), "ig_steps must be an integer >= 1, got 2.5."),
    (dict(positions=(1,)), "positions applies to nodes='resid_pre' only; nodes='heads' sums each "
                           "node over every position."),
    (dict(confidence=1.0), "confidence must be in (0, 1), got 1.0."),
    (dict(n_resamples=1), "n_resamples must be >= 2, got 1."),
])
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        AttributionConfig(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(nodes="mlp", layers=(1,), compare_exact=True), ConfigError,
     "compare_exact correlates the cells, but this config has only 1; select at least 3"),
    (dict(layers=(3,)), SiteError, "layer 3 is out of range; this model has 3 layers (valid: 0..2)."),
    (dict(nodes="resid_pre", positions=(7,)), ConfigError,
     "Positions [7] are outside the prompts' 7 tokens (valid -7..6)."),
    (dict(layers=(1, 1)), ConfigError, "layers lists a layer twice: [1, 1]."),
])
def test_refused_before_any_forward(llama, task, kwargs, error, message):
    counter = ForwardCounter(llama.hf)
    try:
        with pytest.raises(error) as err:
            attribution_patching(llama, *task, AttributionConfig(**kwargs))
    finally:
        counter.remove()
    assert message in str(err.value)
    assert counter.calls == 0
