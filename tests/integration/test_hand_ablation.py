"""An ablation through interplab equals the same edit made by hand with torch hooks on the HF
modules (handmade.py names them from the HF modeling code, not from interplab's adapters)."""

from __future__ import annotations

import pytest
import torch

from interplab.interventions import Ablate, Patch, Steer

from .families import HIDDEN, assert_clean
from .handmade import at_positions, hand_hooks, zero


def _hand_run(hf_model, family, ids, install):
    with hand_hooks(hf_model, family) as hand, torch.no_grad():
        install(hand)
        return hf_model(ids).logits


def _check(model, hf_model, family, ids, interventions, install):
    clean = model.run(ids)
    ours = model.run(ids, interventions)
    theirs = _hand_run(hf_model, family, ids, install)
    assert not torch.equal(theirs, clean), "the hand-made edit did nothing; the test is vacuous"
    assert torch.equal(ours, theirs), (ours - theirs).abs().max()
    assert_clean(model)


CASES = {  # site, and the same place by hand: install(hand, edit)
    "attn_out": ("L1.attn_out", lambda h, e: h.attn_out(1, e)),
    "mlp_out": ("L1.mlp_out", lambda h, e: h.mlp_out(1, e)),
    "resid_pre": ("L1.resid_pre", lambda h, e: h.resid_pre(1, e)),
    "resid_post": ("L0.resid_post", lambda h, e: h.resid_post(0, e)),
    "mlp.hidden": ("L0.mlp.hidden", lambda h, e: h.mlp_hidden(0, e)),
    "z_head": ("L1.attn.z[h2]", lambda h, e: h.z_head(1, 2, e)),
    "q_head": ("L1.attn.q[h3]", lambda h, e: h.qkv_head(1, "q", 3, e)),
    "k_head": ("L1.attn.k[h1]", lambda h, e: h.qkv_head(1, "k", 1, e)),
    "v_head": ("L0.attn.v[h1]", lambda h, e: h.qkv_head(0, "v", 1, e)),
    "resid_mid": ("L1.resid_mid", lambda h, e: h.resid_mid(1, e)),
    "embed": ("embed", lambda h, e: h.embed(e)),
    "ln_final": ("ln_final", lambda h, e: h.ln_final(e)),
    "logits": ("logits", lambda h, e: h.logits(e)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_zero_ablation_equals_hand_hook(model, hf_model, family, ids, case):
    site, install = CASES[case]
    if case == "resid_mid" and family.parallel:
        pytest.skip("no resid_mid under a parallel residual (see test_errors)")
    _check(model, hf_model, family, ids, [Ablate(site)], lambda h: install(h, zero))


@pytest.mark.parametrize("case", sorted(CASES))
def test_steer_equals_hand_hook(model, hf_model, family, ids, case):
    """Steering, unlike zeroing, is not undone by a norm (RMSNorm(0) = 0), so it also tells
    the two sides of a norm apart (Gemma's sandwich norms, Qwen3's QK-norm)."""
    site, install = CASES[case]
    if case == "resid_mid" and family.parallel:
        pytest.skip("no resid_mid under a parallel residual (see test_errors)")
    v = torch.randn(model.site_shape(site), generator=torch.Generator().manual_seed(5))
    _check(model, hf_model, family, ids, [Steer(site, vector=v, scale=2.0)],
           lambda h: install(h, lambda x: x + 2.0 * v))


def test_zero_ablation_at_some_positions(model, hf_model, family, ids):
    def install(h):
        h.attn_out(0, at_positions([1, 4], zero))
        h.z_head(1, 0, at_positions([6], zero))
        h.mlp_hidden(1, at_positions([2], zero))

    interventions = [
        Ablate("L0.attn_out", positions=[1, 4]),
        Ablate("L1.attn.z[h0]", positions=[-1]),
        Ablate("L1.mlp.hidden", positions=[2]),
    ]
    _check(model, hf_model, family, ids, interventions, install)


def test_steer_and_patch_equal_hand_edits(model, hf_model, family, ids):
    g = torch.Generator().manual_seed(3)
    v_pre = torch.randn(HIDDEN, generator=g)
    v_head = torch.randn(family.d_head, generator=g)
    value = torch.randn(family.d_head, generator=g)

    def install(h):
        h.resid_pre(0, at_positions([2, 3], lambda x: x + 2.0 * v_pre))
        h.qkv_head(0, "v", 0, lambda x: x + v_head)
        h.z_head(1, 3, at_positions([5], lambda x: torch.zeros_like(x) + value))

    interventions = [
        Steer("L0.resid_pre", vector=v_pre, scale=2.0, positions=[2, 3]),
        Steer("L0.attn.v[h0]", vector=v_head),
        Patch("L1.attn.z[h3]", value=value, positions=[5]),
    ]
    _check(model, hf_model, family, ids, interventions, install)


def test_steer_resid_mid_equals_rewritten_block(model, hf_model, family, ids):
    if family.parallel:
        pytest.skip("no resid_mid under a parallel residual")
    v = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(4))

    def install(h):
        h.resid_mid(0, at_positions([1, 5], lambda x: x + v))
        h.mlp_out(1, zero)

    interventions = [Steer("L0.resid_mid", vector=v, positions=[1, 5]), Ablate("L1.mlp_out")]
    _check(model, hf_model, family, ids, interventions, install)


def test_resid_mid_edit_reaches_the_residual_branch(model, family, ids):
    """Zeroing resid_mid must zero the residual the MLP's output is added to, not only the
    MLP's input: resid_post then equals mlp_out exactly."""
    if family.parallel:
        pytest.skip("no resid_mid under a parallel residual")
    _, cache = model.run_with_cache(ids, ["L0.resid_post", "L0.mlp_out", "L0.resid_mid"],
                                    [Ablate("L0.resid_mid")])
    assert torch.equal(cache["L0.resid_mid"], torch.zeros_like(cache["L0.resid_mid"]))
    assert torch.equal(cache["L0.resid_post"], cache["L0.mlp_out"])
