"""Dictionary evaluation: splicing, CE / KL / loss recovered, reconstruction metrics.

Properties, not saved numbers: an identity dictionary recovers all the loss with KL 0; a zero
dictionary recovers none; a spliced SAE or transcoder equals a hand-made HF forward hook; the
metrics come from the splice's own forwards; bad inputs are refused before any forward.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from interplab.activations.source import TensorSource
from interplab.core.errors import ConfigError, InputError, SiteError
from interplab.dictionary import DICTIONARIES, Dictionary, DictionaryConfig
from interplab.dictionary import metrics as M
from interplab.dictionary.evaluate import EvalConfig, evaluate
from interplab.runtime import HookedModel

from .families import VOCAB, ForwardCounter, assert_clean, build, tokens

QUIET = dict(progress=False, n_resamples=200)


class Identity(Dictionary):
    """Test double: W_enc = W_dec = I, no non-linearity, so forward(x) == x exactly."""

    def __init__(self, cfg: DictionaryConfig, zero: bool = False) -> None:
        super().__init__(cfg)
        with torch.no_grad():
            self.W_enc.copy_(torch.eye(cfg.d_in, cfg.d_sae))
            self.W_dec.copy_(torch.eye(cfg.d_sae, cfg.width_out) * (0.0 if zero else 1.0))

    def activation(self, pre):
        return pre


def identity(site="L0.resid_post", d=64, zero=False):
    return Identity(DictionaryConfig(d_in=d, d_sae=d, input_site=site), zero=zero)


class ExactTranscoder(Dictionary):
    """Test double: a transcoder resid_mid -> mlp_out that is the model's own MLP (exact)."""

    def __init__(self, cfg, norm, mlp) -> None:
        super().__init__(cfg)
        # Copies: calling the hooked modules themselves would re-enter the splice's hooks.
        self.parts = [copy.deepcopy(norm), copy.deepcopy(mlp)]

    def activation(self, pre):
        return torch.relu(pre)

    def forward(self, x):
        norm, mlp = self.parts
        return mlp(norm(x))


def transcoder_cfg(layer=0, **kw):
    return DictionaryConfig(arch="transcoder", d_in=64, d_sae=96, k=8, input_site=f"L{layer}.resid_mid",
                            output_site=f"L{layer}.mlp_out", **kw)


@pytest.fixture(scope="module")
def contexts():
    return tokens(6, 9, seed=1)


@pytest.fixture(params=["llama", "gpt2"])
def small(request):
    """Two families whose MLP branch is the plain MLP module, for the hand-made hooks."""
    m = HookedModel(build(request.param))
    yield m
    assert_clean(m)


def _ce_kl(logits, clean, ids):
    logp = F.log_softmax(logits[:, :-1].double(), -1)
    logp_c = F.log_softmax(clean[:, :-1].double(), -1)
    ce = F.nll_loss(logp.reshape(-1, logp.shape[-1]), ids[:, 1:].reshape(-1))
    kl = (logp_c.exp() * (logp_c - logp)).sum(-1).mean()
    return float(ce), float(kl)


# -- the defining properties, on every family ------------------------------------------------
def test_identity_recovers_everything(model, contexts):
    r = evaluate(model, identity(), contexts, EvalConfig(batch_size=4, **QUIET))
    assert r.loss_recovered == 1.0
    assert r.kl == 0.0 and r.ce_spliced == r.ce_clean
    assert r.fvu == 0.0 and r.explained_variance == 1.0
    assert r.cosine_similarity == pytest.approx(1.0) and r.relative_norm == pytest.approx(1.0)
    assert r.n_tokens == 6 * 9 and r.n_scored == 6 * 8 and r.n_contexts == 6
    assert r.kl_zero > 0 and r.ce_zero != r.ce_clean
    assert float(r.ce_increase_ci.low) == float(r.ce_increase_ci.high) == 0.0
    assert float(r.kl_ci.high) == 0.0
    assert r.loss_recovered_ci == (1.0, 1.0)
    assert_clean(model)


def test_zero_dictionary_recovers_nothing(model, contexts):
    r = evaluate(model, identity(zero=True), contexts, EvalConfig(batch_size=4, **QUIET))
    assert r.loss_recovered == 0.0
    assert r.ce_spliced == r.ce_zero and r.kl == r.kl_zero
    assert r.fvu > 0.99 and r.cosine_similarity == 0.0 and r.relative_norm == 0.0


# -- against hand-made HF hooks ----------------------------------------------------------------
def _topk(d_in=64, site="L0.mlp_out", seed=1):
    sae = DICTIONARIES.get("topk")(DictionaryConfig(d_in=d_in, d_sae=128, k=8, input_site=site))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.b_dec.copy_(0.1 * torch.randn(d_in, generator=g))
        sae.b_enc.copy_(0.1 * torch.randn(128, generator=g))
    return sae


def test_sae_splice_equals_hand_hook(small, contexts):
    sae = _topk()
    mlp = small.adapter.mlp(0)
    with torch.no_grad():
        clean = small.hf(input_ids=contexts).logits
        seen = []

        def replace(mod, args, out):
            seen.append(out.reshape(-1, 64).clone())
            return sae(out)

        h = mlp.register_forward_hook(replace)
        try:
            spliced = small.hf(input_ids=contexts).logits
        finally:
            h.remove()
        h = mlp.register_forward_hook(lambda mod, args, out: torch.zeros_like(out))
        try:
            zeroed = small.hf(input_ids=contexts).logits
        finally:
            h.remove()
    ce_c, _ = _ce_kl(clean, clean, contexts)
    ce_s, kl = _ce_kl(spliced, clean, contexts)
    ce_z, _ = _ce_kl(zeroed, clean, contexts)
    r = evaluate(small, sae, contexts, EvalConfig(batch_size=6, **QUIET))
    assert r.ce_clean == pytest.approx(ce_c, rel=1e-5)
    assert r.ce_spliced == pytest.approx(ce_s, rel=1e-5)
    assert r.ce_zero == pytest.approx(ce_z, rel=1e-5)
    assert r.kl == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert r.loss_recovered == pytest.approx((ce_z - ce_s) / (ce_z - ce_c), rel=1e-4)
    x = seen[0]
    with torch.no_grad():
        assert r.fvu == pytest.approx(M.fvu(sae(x), x), rel=1e-5)
        assert r.l0 == pytest.approx(M.l0(sae.encode(x)))
        assert torch.equal(r.density, M.feature_density(sae.encode(x)))
    lo, hi = r.loss_recovered_ci
    assert lo <= r.loss_recovered <= hi
    ci = r.ce_increase_ci
    assert float(ci.low) <= float(ci.estimate) <= float(ci.high)
    assert float(ci.estimate) == pytest.approx(r.ce_spliced - r.ce_clean)


def test_transcoder_splice_equals_hand_hook(small, contexts):
    tc = DICTIONARIES.get("transcoder")(transcoder_cfg())
    norm, mlp = small.adapter.mlp_norm(0), small.adapter.mlp(0)
    store = {}
    with torch.no_grad():
        clean = small.hf(input_ids=contexts).logits
        h1 = norm.register_forward_pre_hook(lambda mod, args: store.__setitem__("x", args[0]))
        h2 = mlp.register_forward_hook(lambda mod, args, out: tc(store["x"]))
        try:
            spliced = small.hf(input_ids=contexts).logits
        finally:
            h1.remove()
            h2.remove()
    ce_s, kl = _ce_kl(spliced, clean, contexts)
    r = evaluate(small, tc, contexts, EvalConfig(batch_size=4, **QUIET))
    assert r.ce_spliced == pytest.approx(ce_s, rel=1e-5)
    assert r.kl == pytest.approx(kl, rel=1e-4, abs=1e-7)
    # Reconstruction is judged against the clean MLP output.
    _, cache = small.run_with_cache(contexts, ["L0.resid_mid", "L0.mlp_out"])
    x, t = cache["L0.resid_mid"].reshape(-1, 64), cache["L0.mlp_out"].reshape(-1, 64)
    with torch.no_grad():
        assert r.fvu == pytest.approx(M.fvu(tc(x), t), rel=1e-5)


def test_exact_transcoder_recovers_everything(small, contexts):
    a = small.adapter
    tc = ExactTranscoder(transcoder_cfg(), a.mlp_norm(0), a.mlp(0))
    r = evaluate(small, tc, contexts, EvalConfig(batch_size=4, **QUIET))
    assert r.loss_recovered == pytest.approx(1.0, abs=1e-5)
    assert r.kl == pytest.approx(0.0, abs=1e-9)
    assert r.fvu == pytest.approx(0.0, abs=1e-9)


# -- how many forwards, and BOS ------------------------------------------------------------------
@pytest.mark.parametrize("kw, per_batch", [({}, 3), ({"zero_ablation": False}, 2), ({"downstream": False}, 1)])
def test_forward_count(small, contexts, kw, per_batch):
    sae = _topk()
    counter = ForwardCounter(small.hf)
    try:
        r = evaluate(small, sae, contexts, EvalConfig(batch_size=4, **QUIET, **kw))
    finally:
        counter.remove()
    assert counter.calls == 2 * per_batch  # 6 contexts in batches of 4 + 2
    ref = evaluate(small, sae, contexts, EvalConfig(batch_size=6, **QUIET))
    assert r.fvu == pytest.approx(ref.fvu, rel=1e-6)
    assert (r.ce_spliced is None) == (kw.get("downstream") is False)
    assert (r.loss_recovered is None) == bool(kw)


def test_bos_positions_left_alone(small):
    ids = tokens(4, 8, seed=3)
    ids[:, 0] = 1  # BOS, the tiny configs' bos_token_id
    ids[1, 4] = 1  # a packed document boundary: its prediction is not scored
    zero = identity(zero=True)
    r = evaluate(small, zero, ids, EvalConfig(batch_size=4, **QUIET))
    assert r.n_tokens == 4 * 8 - 5
    assert r.n_scored == 4 * 7 - 1
    # Zero at every non-BOS position of L0.resid_post, by hand.
    block = small.adapter.blocks()[0]
    keep = (ids != 1)[..., None]

    def hook(mod, args, out):
        if isinstance(out, tuple):
            return (torch.where(keep, torch.zeros_like(out[0]), out[0]), *out[1:])
        return torch.where(keep, torch.zeros_like(out), out)

    with torch.no_grad():
        clean = small.hf(input_ids=ids).logits
        h = block.register_forward_hook(hook)
        try:
            zeroed = small.hf(input_ids=ids).logits
        finally:
            h.remove()
    logp = F.log_softmax(zeroed[:, :-1].double(), -1)
    nll = -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    scored = ids[:, 1:] != 1
    assert r.ce_spliced == pytest.approx(float(nll[scored].mean()), rel=1e-5)
    assert r.loss_recovered == 0.0
    all_in = evaluate(small, zero, ids, EvalConfig(batch_size=4, exclude_bos=False, **QUIET))
    assert all_in.n_tokens == 32 and all_in.n_scored == 28
    del clean


# -- activation sources --------------------------------------------------------------------------
def test_on_tensor_source_equals_all_at_once():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 16, generator=g) + 5
    sae = _topk(d_in=16, site="L0.resid_post")
    src = TensorSource({"L0.resid_post": x}, shuffle=False)
    r = evaluate(None, sae, src, EvalConfig(n_batches=3, source_batch_size=32, **QUIET))
    with torch.no_grad():
        assert r.fvu == pytest.approx(M.fvu(sae(x), x), rel=1e-9)
        assert r.mse == pytest.approx(M.mse(sae(x), x), rel=1e-9)
        assert torch.equal(r.density, M.feature_density(sae.encode(x)))
    assert r.ce_clean is None and r.n_tokens == 96
    with pytest.raises(InputError, match="not the dictionary's input site"):
        evaluate(None, _topk(d_in=16, site="L1.resid_post"), src, EvalConfig(**QUIET))


# -- refusing before work --------------------------------------------------------------------------
def test_refuses_before_any_forward(small, contexts):
    counter = ForwardCounter(small.hf)
    try:
        with pytest.raises(SiteError, match="out of range"):
            evaluate(small, identity(site="L9.resid_post"), contexts, EvalConfig(**QUIET))
        with pytest.raises(ConfigError, match="expects width 32"):
            evaluate(small, identity(d=32), contexts, EvalConfig(**QUIET))
        with pytest.raises(ConfigError, match="no input_site"):
            evaluate(small, identity(site=""), contexts, EvalConfig(**QUIET))
        bad = contexts.clone()
        bad[0, 0] = VOCAB
        with pytest.raises(InputError, match="vocabulary is 0..31"):
            evaluate(small, identity(), bad, EvalConfig(**QUIET))
        with pytest.raises(InputError, match="LongTensor"):
            evaluate(small, identity(), contexts[0], EvalConfig(**QUIET))
        with pytest.raises(InputError, match="at least 12 tokens"):
            evaluate(small, identity(), contexts, EvalConfig(ctx_len=12, **QUIET))
    finally:
        counter.remove()
    assert counter.calls == 0


def test_config_checks():
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        EvalConfig(batch_size=0)
    with pytest.raises(ConfigError, match="dense_threshold"):
        EvalConfig(dense_threshold=2.0)
