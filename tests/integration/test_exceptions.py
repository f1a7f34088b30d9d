"""An exception inside an intervention propagates and leaves the model exactly as it was."""

from __future__ import annotations

import pytest
import torch

from interplab.interventions import Ablate, Apply, Steer, applied

from .families import assert_clean, raiser

BOOM = "boom from inside the hook"


def _failing(family):
    """A raising hook behind others that attach many torch hooks (resid_mid adds its fix-up)."""
    ivs = [Ablate("L0.attn.z[h1]"), Steer("L0.resid_post", vector=torch.ones(64))]
    if not family.parallel:
        ivs.append(Ablate("L0.resid_mid"))
    return [*ivs, Apply("L1.mlp.hidden", fn=raiser(BOOM))]


def _still_plain(model, hf_model, ids):
    assert_clean(model)
    with torch.no_grad():
        expected = hf_model(ids).logits
    assert torch.equal(model.run(ids), expected)


def test_run(model, hf_model, ids, family):
    with pytest.raises(RuntimeError, match=BOOM):
        model.run(ids, _failing(family))
    _still_plain(model, hf_model, ids)


def test_run_with_cache(model, hf_model, ids, family):
    with pytest.raises(RuntimeError, match=BOOM):
        model.run_with_cache(ids, ["L0.resid_pre", "L1.resid_post", "L0.attn.pattern"],
                             _failing(family))
    _still_plain(model, hf_model, ids)


def test_gradients(model, hf_model, ids, family):
    flags = {n: p.requires_grad for n, p in hf_model.named_parameters()}
    with pytest.raises(RuntimeError, match=BOOM):
        model.gradients(ids, lambda logits, b: logits.sum(), ["L0.resid_pre", "L1.attn.z[h0]"],
                        _failing(family))
    assert {n: p.requires_grad for n, p in hf_model.named_parameters()} == flags
    _still_plain(model, hf_model, ids)


def test_gradients_metric_raises(model, hf_model, ids):
    flags = {n: p.requires_grad for n, p in hf_model.named_parameters()}

    def metric(logits, batch):
        raise ValueError("metric failed")

    with pytest.raises(ValueError, match="metric failed"):
        model.gradients(ids, metric, ["L0.resid_pre", "L1.mlp.hidden"])
    assert {n: p.requires_grad for n, p in hf_model.named_parameters()} == flags
    _still_plain(model, hf_model, ids)


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_generate(model, hf_model, ids, family, use_kv_cache):
    with pytest.raises(RuntimeError, match=BOOM):
        model.generate(ids, max_new_tokens=3, interventions=_failing(family),
                       use_kv_cache=use_kv_cache)
    _still_plain(model, hf_model, ids)


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_generate_raises_at_a_decode_step(model, hf_model, ids, use_kv_cache):
    """Raising only at a generated position: the prefill has already run."""
    n = ids.shape[1]
    with pytest.raises(RuntimeError, match=BOOM):
        model.generate(ids, max_new_tokens=4, use_kv_cache=use_kv_cache,
                       interventions=[Apply("L1.attn_out", fn=raiser(BOOM), positions=[n + 2])])
    _still_plain(model, hf_model, ids)


def test_applied_context_manager(model, hf_model, ids, family):
    with pytest.raises(RuntimeError, match=BOOM), applied(model, _failing(family)):
        assert model.n_torch_hooks > 0
        model.run(ids)
    _still_plain(model, hf_model, ids)


def test_applied_body_raises(model, hf_model, ids):
    with pytest.raises(KeyError, match="from the body"), \
            applied(model, [Ablate("L0.attn_out"), Ablate("L1.attn.z[h0]")]):
        assert model.n_torch_hooks > 0
        raise KeyError("from the body")
    _still_plain(model, hf_model, ids)


def test_applied_hooks_act_inside_and_go_on_exit(model, hf_model, ids):
    ivs = [Ablate("L1.attn_out")]
    expected = model.run(ids, ivs)
    with applied(model, ivs) as m:
        assert m is model
        assert torch.equal(model.run(ids), expected)
        _, cache = model.run_with_cache(ids, ["L1.attn_out"])
        assert cache["L1.attn_out"].abs().max() == 0
    _still_plain(model, hf_model, ids)


def test_applied_intervention_raises_in_generate(model, hf_model, ids):
    with pytest.raises(RuntimeError, match=BOOM), \
            applied(model, [Apply("L0.resid_pre", fn=raiser(BOOM))]):
        model.generate(ids, max_new_tokens=2)
    _still_plain(model, hf_model, ids)


def test_apply_returning_wrong_shape(model, hf_model, ids):
    with pytest.raises(Exception, match=r"apply at L0\.mlp_out: fn returned"):
        model.run(ids, [Apply("L0.mlp_out", fn=lambda x: x[:, :3])])
    _still_plain(model, hf_model, ids)


def test_hook_fired_outside_a_forward_context(model, hf_model, ids):
    """A bare HF forward under ``applied`` has no positions: a clear error, then clean."""
    with pytest.raises(Exception, match="fired outside HookedModel.run"), \
            applied(model, [Ablate("L0.attn_out")]), torch.no_grad():
        hf_model(ids)
    _still_plain(model, hf_model, ids)
