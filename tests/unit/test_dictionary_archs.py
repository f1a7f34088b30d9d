"""Architecture-specific properties: the formula each dictionary claims, checked by hand."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import ConfigError
from interplab.dictionary import DICTIONARIES, DictionaryConfig
from interplab.dictionary.jumprelu import JumpReLUFunction, StepFunction

TOPK_FAMILY = ["topk", "batchtopk", "matryoshka", "transcoder", "skip_transcoder"]
SITES = dict(input_site="L1.resid_mid", output_site="L1.mlp_out")


def build(name: str, **kw):
    kw = {"d_in": 16, "d_sae": 64, "k": 4, "dead_after_tokens": 8, **kw}
    if name in ("transcoder", "skip_transcoder"):
        kw = {**SITES, **kw}
    return DICTIONARIES.get(name)(DictionaryConfig(arch=name, **kw))


# -- config checks ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TOPK_FAMILY)
def test_k_above_d_sae_is_refused(name):
    with pytest.raises(ConfigError, match=r"k=65 exceeds d_sae=64: a token cannot keep more latents than exist\."):
        build(name, k=65)


def test_transcoder_needs_two_sites():
    with pytest.raises(ConfigError, match="needs both input_site and output_site"):
        build("transcoder", input_site="L1.resid_mid", output_site="")
    with pytest.raises(ConfigError, match="maps one site to another, but input_site and output_site are both 'L1.resid_mid'"):
        build("skip_transcoder", input_site="L1.resid_mid", output_site="L1.resid_mid")
    same_site_other_width = build("transcoder", input_site="L1.x", output_site="L1.x", d_out=8)
    assert same_site_other_width.is_transcoder


@pytest.mark.parametrize(("prefixes", "message"), [
    ([16, 4], "strictly ascending"), ([4, 4], "strictly ascending"),
    ([4, 64], "must all be < d_sae=64"), ([0, 8], "positive integers"),
])
def test_matryoshka_prefixes_are_validated(prefixes, message):
    with pytest.raises(ConfigError, match=message):
        build("matryoshka", matryoshka_prefixes=prefixes)


def test_matryoshka_default_prefixes():
    assert build("matryoshka").prefixes == [4, 16, 64]
    assert build("matryoshka", matryoshka_prefixes=[8, 32]).prefixes == [8, 32, 64]


# -- AuxK and firing counters -------------------------------------------------------------------
def test_update_firing_counts_tokens_since_last_fire():
    d = build("topk")
    z = torch.zeros(5, 64)
    z[2, 0] = 1.0
    d.update_firing(z)
    assert d.tokens_since_fired[0] == 0 and (d.tokens_since_fired[1:] == 5).all()
    z = torch.zeros(3, 64)
    z[0, 1] = 0.5
    d.update_firing(z)
    assert d.tokens_since_fired[0] == 3 and d.tokens_since_fired[1] == 0 and (d.tokens_since_fired[2:] == 8).all()
    assert d.dead_mask().tolist() == [False, False] + [True] * 62


def test_auxk_only_uses_dead_latents():
    d = build("topk", aux_k=4).train()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[[3, 10, 20, 40, 50, 60]] = True
    d.tokens_since_fired[dead] = 8
    x = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    out = d.training_step(x)
    aux = out.parts["auxk"]
    assert aux > 0
    aux.backward()
    enc_cols = d.W_enc.grad.abs().sum(0)
    assert (enc_cols[~dead] == 0).all() and (enc_cols[dead] > 0).any()
    assert (d.b_enc.grad[~dead] == 0).all()
    assert (d.W_dec.grad.abs().sum(1)[~dead] == 0).all()
    # the hand formula: top aux_k dead pre-activations reconstruct the (detached) residual
    with torch.no_grad():
        pre = d.pre_acts(x)
        masked = pre.masked_fill(~dead, float("-inf"))
        v, i = masked.topk(4, dim=-1)
        z_aux = torch.zeros_like(pre).scatter_(-1, i, v.relu())
        resid = x - out.recon
        var = (resid - resid.mean(0)).pow(2).sum(-1).mean()
        want = d.cfg.aux_coeff * 1.0 * ((z_aux @ d.W_dec - resid).pow(2).sum(-1).mean() / var)
    torch.testing.assert_close(aux.detach(), want)


def test_no_auxk_part_without_dead_latents_or_in_eval():
    d = build("topk").train()
    x = torch.randn(8, 16)
    assert "auxk" not in d.training_step(x).parts
    d.tokens_since_fired.fill_(100)
    assert "auxk" in d.training_step(x).parts
    assert "auxk" not in d.eval().training_step(x).parts


# -- exact reconstruction -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["topk", "batchtopk", "matryoshka", "relu", "jumprelu"])
def test_fvu_is_zero_when_the_dictionary_holds_the_basis(name):
    # rows 0..15 = +e_i, rows 16..31 = -e_i, the rest 0: every x is |x_i| along ±e_i, 16 latents.
    d = build(name, k=16, matryoshka_prefixes=[32])
    with torch.no_grad():
        eye = torch.eye(16)
        d.W_dec.zero_()
        d.W_dec[:16], d.W_dec[16:32] = eye, -eye
        d.W_enc.copy_(d.W_dec.T)
        d.b_enc.zero_(), d.b_dec.zero_()
        if hasattr(d, "log_threshold"):
            d.log_threshold.fill_(-20.0)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(3))
    out = d.train().training_step(x)
    assert out.parts["fvu"] < 1e-10
    if hasattr(d, "threshold_updates"):  # θ = this batch's smallest kept value, which H(pre - θ) drops
        d.threshold.zero_()
    torch.testing.assert_close(d.eval()(x), x)


# -- BatchTopK ----------------------------------------------------------------------------------
def test_batchtopk_keeps_k_per_token_on_average_and_tracks_the_threshold():
    d = build("batchtopk", threshold_lr=0.25).train()
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g)
    z1 = d.training_step(x1).latents
    assert int((z1 != 0).sum()) == 4 * 10
    pre = d.pre_acts(x1).relu().flatten()
    torch.testing.assert_close(z1[z1 != 0].sort().values, pre.topk(40).values.sort().values)
    theta1 = z1[z1 > 0].min()
    torch.testing.assert_close(d.threshold, theta1.detach())  # the first batch sets θ directly
    z2 = d.training_step(x2).latents
    torch.testing.assert_close(d.threshold, (0.75 * theta1 + 0.25 * z2[z2 > 0].min()).detach())
    assert int(d.threshold_updates) == 2
    before = d.threshold.clone()
    d.eval().training_step(x1)  # evaluation does not move θ
    assert torch.equal(d.threshold, before)
    # inference: JumpReLU at θ
    pre = d.pre_acts(d._in(x1))
    torch.testing.assert_close(d.encode(x1), torch.where(pre > d.threshold, pre, torch.zeros_like(pre)))


# -- JumpReLU -----------------------------------------------------------------------------------
def test_jumprelu_straight_through_gradients_match_the_paper():
    eps = 0.1
    theta = torch.tensor([0.5, 1.0, 0.2], requires_grad=True)
    u = torch.tensor([[-0.9, 0.3, 0.45], [0.2, -0.4, 2.0], [0.0, 0.6, -0.1], [0.49, -0.2, 0.1]])
    pre = (theta.detach() + eps * u).requires_grad_(True)
    g = torch.tensor([[1.0, 2.0, -1.0], [0.5, 1.0, 1.0], [3.0, -2.0, 0.5], [1.0, 1.0, 1.0]])
    kernel = (u.abs() < 0.5).float()

    z = JumpReLUFunction.apply(pre, theta, eps)
    torch.testing.assert_close(z, pre * (pre > theta))
    z.backward(g)
    torch.testing.assert_close(theta.grad, (-(theta.detach() / eps) * kernel * g).sum(0))
    torch.testing.assert_close(pre.grad, (pre > theta).float() * g)

    theta.grad, pre.grad = None, None
    h = StepFunction.apply(pre, theta, eps)
    torch.testing.assert_close(h, (pre > theta).float())
    h.backward(g)
    torch.testing.assert_close(theta.grad, (-(1 / eps) * kernel * g).sum(0))
    torch.testing.assert_close(pre.grad, torch.zeros_like(pre))


def test_jumprelu_l0_penalty_and_its_threshold_gradient():
    d = build("jumprelu", l0_coeff=0.5, jumprelu_bandwidth=0.2, jumprelu_threshold=0.3)
    pre = torch.randn(20, 64, generator=torch.Generator().manual_seed(0))
    loss = d.sparsity_loss(pre, d.activation(pre))["l0_loss"]
    torch.testing.assert_close(loss, 0.5 * (pre > 0.3).float().sum(-1).mean())
    loss.backward()
    kernel = ((pre - 0.3).abs() < 0.1).float()
    # chain rule through θ = exp(log θ): d/dlogθ = θ · d/dθ
    want = 0.3 * (-(1 / 0.2) * kernel * 0.5 / 20).sum(0)
    torch.testing.assert_close(d.log_threshold.grad, want)


def test_jumprelu_normalize_decoder_keeps_the_function():
    d = build("jumprelu", jumprelu_threshold=0.1)
    with torch.no_grad():
        d.W_dec.mul_(torch.linspace(0.5, 2.0, 64)[:, None])
    x = torch.randn(16, 16)
    before = d(x)
    d.normalize_decoder()
    torch.testing.assert_close(d.W_dec.norm(dim=-1), torch.ones(64))
    torch.testing.assert_close(d(x), before)


# -- Matryoshka ---------------------------------------------------------------------------------
def test_matryoshka_loss_is_the_sum_of_prefix_errors():
    d = build("matryoshka", matryoshka_prefixes=[8, 32]).train()
    with torch.no_grad():
        d.b_dec.normal_()
        d.out_scale.fill_(1.5), d.in_scale.fill_(1.5)
    x = torch.randn(12, 16, generator=torch.Generator().manual_seed(1))
    out = d.training_step(x)
    t = 1.5 * x
    want = sum(((out.latents[:, :m] @ d.W_dec[:m] + d.b_dec - t).pow(2).sum(-1).mean()) for m in (8, 32, 64))
    torch.testing.assert_close(out.loss, want)
    assert set(out.parts) >= {"mse", "mse_8", "mse_32"}


# -- ReLU, transcoders --------------------------------------------------------------------------
def test_relu_l1_is_weighted_by_decoder_norms():
    d = build("relu", l1_coeff=2.0)
    assert d.unit_norm_decoder is False
    with torch.no_grad():
        d.W_dec.mul_(3.0)
    x = torch.randn(8, 16)
    out = d.training_step(x)
    z = out.latents
    torch.testing.assert_close(out.parts["l1"], 2.0 * (z.abs() * 3.0).sum(-1).mean())


def test_transcoder_does_not_centre_its_input_and_skip_adds_a_linear_path():
    d = build("skip_transcoder", d_out=8)
    assert d.W_skip.shape == (16, 8) and torch.equal(d.W_skip, torch.zeros(16, 8))
    with torch.no_grad():
        d.b_dec.normal_(), d.W_skip.normal_(), d.in_scale.fill_(2.0), d.out_scale.fill_(0.5)
    x = torch.randn(8, 16)
    pre = d.pre_acts(2.0 * x)
    torch.testing.assert_close(pre, 2.0 * x @ d.W_enc + d.b_enc)
    z = d.encode(x)
    torch.testing.assert_close(d(x), (z @ d.W_dec + d.b_dec + 2.0 * x @ d.W_skip) / 0.5)
