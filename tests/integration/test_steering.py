"""Steering vectors on tiny random models: scale 0 is the plain model bit for bit, steering adds
exactly ``scale * vector`` where asked (checked against hand-made HF hooks), per-row vectors in
one batch equal each row alone, generation under the KV cache equals the reference, clamping a
latent to its own value is the identity, and the evaluation sweep runs one forward per scale."""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.collect import collect
from interplab.analyses.steering import (
    SteeringVector,
    actadd,
    diff_means,
    from_dictionary,
    pca_diff,
)
from interplab.analyses.steering_apply import clamp_feature, steer_interventions
from interplab.analyses.steering_eval import SteeringEvalConfig, evaluate_steering
from interplab.core.errors import ConfigError, InputError, SiteError
from interplab.dictionary.base import DICTIONARIES, DictionaryConfig
from interplab.interventions import Steer

from .families import HIDDEN, assert_clean, tokens
from .handmade import at_positions, hand_hooks

ATOL = 1e-5


def _vec(seed: int, n: int = HIDDEN) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _hand(hf_model, family, ids, install):
    with hand_hooks(hf_model, family) as hand, torch.no_grad():
        install(hand)
        return hf_model(ids).logits


def test_scale_zero_is_bit_identical(model, ids, forward_calls):
    v = SteeringVector({"L1.resid_post": _vec(0)})
    clean = model.run(ids)
    assert steer_interventions(v, 0.0) == []  # no hook at all at scale 0
    assert torch.equal(model.run(ids, steer_interventions(v, 0.0)), clean)
    # and a Steer that is attached with scale 0 changes nothing either
    assert torch.equal(model.run(ids, v.interventions(0.0)), clean)
    assert torch.equal(model.run(ids, [Steer("L0.resid_pre", vector=_vec(1), scale=0.0)]), clean)
    assert forward_calls.calls == 4
    assert_clean(model)


def test_steer_adds_scale_times_vector_at_site_and_positions(model, hf_model, family, ids):
    vec, scale = _vec(2), 2.5
    v = SteeringVector({"L0.resid_post": vec}, "custom")
    ours = model.run(ids, v.interventions(scale, positions=[1, 4]))
    theirs = _hand(hf_model, family, ids,
                   lambda h: h.resid_post(0, at_positions([1, 4], lambda x: x + scale * vec)))
    assert torch.equal(ours, theirs)
    # every position (None), at resid_pre of the last layer
    last = family.n_layers - 1
    v = SteeringVector({f"L{last}.resid_pre": vec})
    ours = model.run(ids, v.interventions(-1.5))
    theirs = _hand(hf_model, family, ids, lambda h: h.resid_pre(last, lambda x: x + -1.5 * vec))
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, model.run(ids))
    assert_clean(model)


def test_multi_layer_vector_equals_hand_hooks(model, hf_model, family, ids):
    a, b = _vec(3), _vec(4)
    v = SteeringVector({"L0.resid_post": a, "L1.resid_post": b})
    ours = model.run(ids, v.interventions(3.0))
    theirs = _hand(hf_model, family, ids, lambda h: (h.resid_post(0, lambda x: x + 3.0 * a),
                                                     h.resid_post(1, lambda x: x + 3.0 * b)))
    assert torch.equal(ours, theirs)


def test_rows_with_own_vectors_and_scales_equal_each_row_alone(model):
    ids = tokens(4, 6, seed=5)
    a = SteeringVector({"L1.resid_pre": _vec(5)})
    b = SteeringVector({"L0.resid_post": _vec(6), "L1.resid_post": _vec(7)})
    vectors, scales = [a, b, None, a], [1.0, -2.0, 3.0, 4.0]
    batch = model.run(ids, steer_interventions(vectors, scales))
    for r in range(4):
        alone = model.run(ids[r:r + 1], steer_interventions(vectors[r], scales[r])
                          if vectors[r] is not None else [])
        torch.testing.assert_close(batch[r], alone[0], atol=ATOL, rtol=0)
    assert_clean(model)


@pytest.mark.parametrize("where", ["everywhere", "prompt_only", "actadd"])
def test_steered_generation_kv_cache_equals_reference(model, ids, where):
    n = ids.shape[1]
    if where == "actadd":
        v = actadd(model, ids[0, :4], ids[1, :3], "L0.resid_post", pad_token=3)
        ivs = v.interventions(2.0)
    else:
        v = SteeringVector({"L1.resid_pre": 2 * _vec(8)})
        ivs = steer_interventions(v, 2.0, positions=None if where == "everywhere" else range(n))
    fast = model.generate(ids, max_new_tokens=4, interventions=ivs)
    slow = model.generate(ids, max_new_tokens=4, interventions=ivs, use_kv_cache=False)
    assert torch.equal(fast.new_tokens, slow.new_tokens)
    torch.testing.assert_close(fast.logits, slow.logits, atol=ATOL, rtol=0)
    clean = model.generate(ids, max_new_tokens=4)
    assert not torch.allclose(fast.logits, clean.logits, atol=1e-3)
    if where == "prompt_only":  # steering the prompt alone differs from steering generation too
        every = model.generate(ids, max_new_tokens=4, interventions=steer_interventions(v, 2.0))
        assert not torch.allclose(every.logits[:, 1:], fast.logits[:, 1:], atol=1e-4)
        torch.testing.assert_close(every.logits[:, 0], fast.logits[:, 0], atol=ATOL, rtol=0)
    assert_clean(model)


def test_extractors_on_a_model(model):
    pos = [tokens(5, seed=20 + i) for i in range(3)]
    neg = [tokens(4 + i, seed=30 + i) for i in range(3)]
    site = "L1.resid_post"
    v = diff_means(model, pos, neg, site)
    p, q = collect(model, pos, site)[site], collect(model, neg, site)[site]
    torch.testing.assert_close(v.vector, p.mean(0) - q.mean(0))
    w = pca_diff(model, pos, neg, [site, "L0.resid_post"])
    assert len(w.sites) == 2 and float((p - q).mean(0) @ w.vectors[w.sites[0]]) > 0
    # ActAdd: right-padded with the pad token to equal lengths, one row per position
    a = actadd(model, tokens(5, seed=1), tokens(3, seed=2), site, pad_token=3)
    assert a.vector.shape == (5, HIDDEN) and a.method == "actadd"
    with pytest.raises(InputError, match="no tokenizer to pad"):
        actadd(model, tokens(5, seed=1), tokens(3, seed=2), site)


def test_validation_before_any_forward(model, forward_calls):
    with pytest.raises(SiteError):
        diff_means(model, ["x"], ["y"], "L9.resid_post")
    with pytest.raises(InputError, match="empty contrastive set"):
        diff_means(model, [], [tokens(3)], "L0.resid_post")
    bad = SteeringVector({"L1.resid_post": torch.randn(32)})
    cfg = SteeringEvalConfig(scales=[0.0, 1.0], target="logit_diff", target_tokens=[3, 4],
                             n_contexts=0, max_new_tokens=0)
    with pytest.raises(InputError, match="vector has width 32 but L1.resid_post is 64 wide"):
        evaluate_steering(model, bad, tokens(2, 5), cfg)
    early = _LinearProbe("L0.resid_post", _vec(9))
    late = SteeringVector({"L1.resid_post": _vec(9)})
    with pytest.raises(ConfigError, match="before the earliest steered site"):
        evaluate_steering(model, late, tokens(2, 5), SteeringEvalConfig(
            scales=[0.0, 1.0], n_contexts=0, max_new_tokens=0), probe=early)
    assert forward_calls.calls == 0


def test_clamp_to_own_value_is_identity(model, ids):
    site = "L1.resid_post"
    cfg = DictionaryConfig(arch="relu", d_in=HIDDEN, d_sae=96, input_site=site)
    sae = DICTIONARIES.get("relu")(cfg)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
        sae.out_scale.fill_(0.7)
        sae.in_scale.fill_(1.3)
    _, cache = model.run_with_cache(ids, [site])
    x = cache[site][0, 3]
    with torch.no_grad():
        z = sae.encode(x[None])[0]
    latent = int(z.argmax())
    assert z[latent] > 0
    same = clamp_feature(sae, latent, float(z[latent]), positions=[3], rows=[0])
    assert torch.equal(model.run(ids, [same]), model.run(ids))
    # clamping to another value moves the site by exactly (value - z) * W_dec[i] / out_scale
    moved = clamp_feature(sae, latent, float(z[latent]) + 2.0, positions=[3], rows=[0])
    _, c2 = model.run_with_cache(ids, [site], [moved])
    expect = x + 2.0 * sae.W_dec[latent].detach() / 0.7
    torch.testing.assert_close(c2[site][0, 3], expect, atol=ATOL, rtol=1e-5)
    assert torch.equal(c2[site][1], cache[site][1])
    # ... which is what steering along the latent's decoder direction adds (from_dictionary)
    v = from_dictionary(sae, latent)
    _, c3 = model.run_with_cache(ids, [site], v.interventions(2.0, positions=[3], rows=[0]))
    torch.testing.assert_close(c3[site], c2[site], atol=ATOL, rtol=1e-5)
    assert_clean(model)


class _LinearProbe:
    """Stand-in for interplab.analyses.probes.Probe: score = acts · direction."""

    def __init__(self, site, direction, reduction="last"):
        self.site, self.direction, self.reduction = site, direction, reduction

    def score(self, acts):
        return acts @ self.direction


def test_evaluate_steering_sweep(model, family, forward_calls):
    last = f"L{family.n_layers - 1}.resid_post"
    v = SteeringVector({"L0.resid_post": _vec(10)})
    probe = _LinearProbe(last, _vec(11))
    prompts = [tokens(6, seed=40 + i) for i in range(4)]
    cfg = SteeringEvalConfig(scales=[-2.0, 0.0, 1.0, 2.0], n_resamples=200, max_new_tokens=3,
                             n_samples=2)
    res = evaluate_steering(model, v, prompts, cfg, probe=probe, neutral=tokens(2, 8, seed=50))
    # forwards: 4 scales + 4 neutral (baseline + 3 steered) + 4 scales x 3 generation steps
    assert forward_calls.calls == 4 + 4 + 12
    assert res.scores.shape == (4, 4) and res.slopes.shape == (4,)
    # scale 0 is the unsteered model bit for bit
    clean = collect(model, prompts, last)[last]
    assert torch.equal(res.scores[:, 1].float(), probe.score(clean))
    assert res.kl[1] == 0 and (res.kl[[0, 2, 3]] > 0).all()
    assert res.perplexity.shape == (4,) and res.output_length.shape == (2, 4)
    # side effects' CIs over the 2 neutral contexts: around the means, the perplexity's from exp(NLL)
    assert torch.allclose(res.kl_ci.estimate, res.kl.double())
    assert (res.kl_ci.low <= res.kl + 1e-12).all() and (res.kl <= res.kl_ci.high + 1e-12).all()
    assert (res.perplexity_low <= res.perplexity * (1 + 1e-9)).all()
    assert (res.perplexity * (1 - 1e-9) <= res.perplexity_high).all()
    assert (res.kl_ci.high[[0, 2, 3]] > res.kl_ci.low[[0, 2, 3]]).all()
    assert (res.output_length >= 1).all() and (res.output_length <= 3).all()
    assert res.slope.low <= res.slope.estimate <= res.slope.high
    assert 0 <= float(res.wrong_sign.estimate) <= 1
    # logit-diff target, without side effects
    cfg = SteeringEvalConfig(scales=[0.0, 3.0], target="logit_diff", target_tokens=[5, 6],
                             n_contexts=0, max_new_tokens=0, n_resamples=200)
    res = evaluate_steering(model, v, prompts, cfg)
    logits = model.run(torch.stack(prompts))[:, -1]
    torch.testing.assert_close(res.scores[:, 0].float(), logits[:, 5] - logits[:, 6])
    assert res.kl is None and res.output_length is None
    assert_clean(model)
