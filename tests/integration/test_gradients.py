"""Gradients at sites equal autograd through plain hooks that keep the HF tensors."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import InputError
from interplab.core.sites import Site
from interplab.interventions import Ablate, Steer

from .families import assert_clean, left_pad, tokens
from .handmade import hand_hooks, zero

ATOL = 1e-6


def metric(logits, batch):
    return logits[:, -1].log_softmax(-1)[:, 5].sum() - 0.5 * logits[:, 2, 7].mean()


def _sites(family) -> list[str]:
    last = family.n_layers - 1
    sites = ["L0.resid_pre", f"L{last}.resid_pre", "L0.attn.z[h1]", f"L{last}.attn.z[h3]",
             "L0.attn.z[h2]", "L1.mlp.hidden", "L0.attn.q", "L1.attn.q[h2]",
             f"L1.attn.k[h{family.n_kv_heads - 1}]", "L0.attn.v"]
    if not family.parallel:
        sites += ["L0.resid_mid", f"L{last}.resid_mid"]
    return sites


EVERY_KIND = ["embed", "L0.resid_post", "L1.attn_out", "L0.mlp_out", "ln_final", "logits"]


def _by_hand(hf_model, family, ids, sites, install=None):
    store: dict = {}
    with hand_hooks(hf_model, family) as hand, torch.enable_grad():
        if install is not None:
            install(hand)
        for s in sites:
            hand.capture(s, store)
        value = metric(hf_model(ids).logits, None)
        raws = list({id(t): t for t in store.values()}.values())
        grads = dict(zip(map(id, raws), torch.autograd.grad(value, raws)))
    return value.detach(), {s: hand.site_view(s, grads[id(store[s])]) for s in sites}, {
        s: hand.site_view(s, store[s].detach()) for s in sites}


def _compare(result, value, grads, acts, sites):
    torch.testing.assert_close(result.value, value, atol=ATOL, rtol=0)
    for s in sites:
        assert result[s].shape == grads[s].shape, s
        torch.testing.assert_close(result[s], grads[s], atol=ATOL, rtol=1e-5,
                                   msg=lambda m, s=s: f"gradient at {s}: {m}")
        torch.testing.assert_close(result.acts[Site.parse(s)], acts[s], atol=ATOL, rtol=0)
        assert result[s].abs().max() > 0, f"zero gradient at {s}: vacuous"


def test_gradients_equal_hand_autograd(model, hf_model, family, ids):
    sites = _sites(family)
    result = model.gradients(ids, metric, sites)
    value, grads, acts = _by_hand(hf_model, family, ids, sites)
    _compare(result, value, grads, acts, sites)
    assert_clean(model)
    assert all(p.requires_grad for p in hf_model.parameters())


def test_gradients_at_every_kind(model, hf_model, family, ids):
    sites = EVERY_KIND + _sites(family)
    result = model.gradients(ids, metric, sites)
    value, grads, acts = _by_hand(hf_model, family, ids, sites)
    _compare(result, value, grads, acts, sites)


@pytest.mark.parametrize("site_index", range(5))
def test_gradient_at_one_site_alone(model, hf_model, family, ids, site_index):
    """The earliest asked site becomes the leaf; each site alone must still be exact."""
    site = _sites(family)[site_index]
    result = model.gradients(ids, metric, [site])
    value, grads, acts = _by_hand(hf_model, family, ids, [site])
    _compare(result, value, grads, acts, [site])


def test_gradients_under_interventions(model, hf_model, family, ids):
    sites = ["L0.resid_pre", "L1.attn.z[h0]", "L1.mlp.hidden"]
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    ivs = [Ablate("L0.attn.z[h1]"), Steer("L0.mlp_out", vector=v)]

    def install(hand):
        hand.z_head(0, 1, zero)
        hand.mlp_out(0, lambda x: x + v)

    result = model.gradients(ids, metric, sites, ivs)
    value, grads, acts = _by_hand(hf_model, family, ids, sites, install)
    _compare(result, value, grads, acts, sites)


def test_requires_grad_flags_restored(model, hf_model, family, ids):
    params = dict(hf_model.named_parameters())
    frozen = [n for i, n in enumerate(params) if i % 3 == 0]
    try:
        for n in frozen:
            params[n].requires_grad_(False)
        before = {n: p.requires_grad for n, p in params.items()}
        model.gradients(ids, metric, _sites(family)[:3])
        assert {n: p.requires_grad for n, p in params.items()} == before
        assert all(p.grad is None for p in params.values()), "gradients touched parameter .grad"
    finally:
        for n in frozen:
            params[n].requires_grad_(True)


def test_padded_gradients_equal_rows_alone(model, family):
    rows = [tokens(6, seed=50), tokens(4, seed=51)]
    batch = left_pad(rows)
    sites = ["L0.resid_pre", "L1.attn.z[h1]"]

    def m(logits, b):  # a sum over rows, each row's last real token
        return logits[:, -1].log_softmax(-1)[:, 5].sum()

    result = model.gradients(batch, m, sites)
    for r, p in enumerate(rows):
        alone = model.gradients(p[None], m, sites)
        for s in sites:
            torch.testing.assert_close(result[s][r, -len(p):], alone[s][0], atol=1e-5, rtol=1e-4)
            pad = result[s][r, : result[s].shape[1] - len(p)]
            assert torch.equal(pad, torch.zeros_like(pad)), "gradient flowed to padding"


def test_metric_must_be_scalar(model, ids):
    with pytest.raises(InputError, match="The metric must return a scalar tensor"):
        model.gradients(ids, lambda logits, b: logits[:, -1], ["L0.resid_pre"])
    assert_clean(model)
