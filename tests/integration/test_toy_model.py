"""The toy family through the ordinary runtime: planted models load from a saved directory,
expose every site, show their mechanism in the cache, and their truths survive ablation tests
(ablating a truth node breaks the task, ablating anything else leaves it exact).

The generic toy family (pre-LN, random weights) runs the whole integration suite through
``families.py``; here the ``normalization="none"`` variant gets the same basic guarantees.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import interplab
from interplab.core.errors import ConfigError, SiteError, UnsupportedArchitectureError
from interplab.groundtruth.planted import induction_model, reproduce_domain, successor_model
from interplab.interventions import Ablate, Apply
from interplab.models.toy import ToyConfig, ToyForCausalLM
from interplab.runtime import HookedModel

from .families import assert_clean, tokens


@pytest.fixture(scope="module")
def induction():
    return induction_model(vocab=8, n_ctx=9, n_distractors=3)


@pytest.fixture(scope="module")
def successor():
    return successor_model(vocab=8, n_ctx=8, n_distractors=2)


@pytest.fixture(scope="module")
def saved(induction, tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "induction"
    induction.model.save_pretrained(path)
    return path


# -- loading ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["induction", "successor"])
def test_save_and_load_round_trip(which, request, tmp_path):
    planted = request.getfixturevalue(which)
    planted.model.save_pretrained(tmp_path)
    loaded = interplab.load(str(tmp_path))
    assert isinstance(loaded.hf, ToyForCausalLM) and loaded.adapter.name == "toy"
    assert loaded.source["kind"] == "dir" and loaded.source["weights_hash"]
    planted.truth.check_against(loaded)
    domain = planted.domain()
    with torch.no_grad():
        assert torch.equal(loaded.run(domain), planted.model(domain).logits)
    assert reproduce_domain(planted, loaded).exact


def test_unknown_config_key_is_refused(saved, tmp_path):
    config = json.loads((saved / "config.json").read_text())
    for key, value, shown in (("shiny_new_option", 3, "shiny_new_option=3"),
                              ("normalization", "rmsnorm",
                               "normalization='rmsnorm' (supported: 'none', 'layernorm')")):
        (tmp_path / "config.json").write_text(json.dumps({**config, key: value}))
        for f in saved.glob("*.safetensors"):
            (tmp_path / f.name).write_bytes(f.read_bytes())
        with pytest.raises(UnsupportedArchitectureError, match=re.escape(
                f"The toy adapter does not handle these config entries: {shown}.")):
            interplab.load(str(tmp_path))


def test_bad_switch_is_refused_at_construction():
    with pytest.raises(ConfigError, match=r"positional='rotary', normalization='none'; valid "
                                          r"positional: 'learned', 'none'"):
        ToyForCausalLM(ToyConfig(positional="rotary"))


# -- sites and the mechanism in the cache ----------------------------------------------------------
def test_every_site_of_an_attention_only_model(induction):
    model = HookedModel(induction.model)
    d = model.dims
    sites = ["embed", "ln_final", "logits"] + [
        f"L{layer}.{k}" for layer in range(2)
        for k in ("resid_pre", "resid_post", "attn_out", "attn.z", "attn.q", "attn.k", "attn.v",
                  "attn.pattern", "attn.z[h1]", "attn.pattern[h1]")
    ]
    ids = induction.domain()[:4]
    _, cache = model.run_with_cache(ids, sites)
    assert len(cache) == len(sites)
    assert cache["L0.attn.z"].shape == (4, 9, d.n_heads, d.d_head)
    assert torch.equal(cache["L1.attn.z[h1]"], cache["L1.attn.z"][:, :, 1])
    assert torch.equal(cache["ln_final"], cache["L1.resid_post"])  # normalization "none"
    torch.testing.assert_close(cache["L1.resid_post"], cache["L1.resid_pre"] + cache["L1.attn_out"],
                               atol=0, rtol=0)
    for kind in ("mlp_out", "mlp.hidden", "resid_mid"):
        with pytest.raises(SiteError, match=rf"Site L0\.{re.escape(kind)}: this toy model is "
                                            r"attention-only \(d_mlp=0\)"):
            model.run_with_cache(ids, [f"L0.{kind}"])
    assert_clean(model)


def test_previous_token_head_attends_to_the_previous_token(induction):
    model = HookedModel(induction.model)
    (_, prev), (_, ind) = induction.truth.heads()
    ids = induction.domain()
    _, cache = model.run_with_cache(ids, [f"L0.attn.pattern[h{prev}]", f"L1.attn.pattern[h{ind}]"])
    pattern = cache[f"L0.attn.pattern[h{prev}]"]  # [batch, query, key]
    assert torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1).min() >= 0.99
    # the induction head: from position m + j (token s_j) to j + 1, the token after s_j's copy
    m = (ids.shape[1] - 1) // 2
    for j in range(1, m + 1):
        assert cache[f"L1.attn.pattern[h{ind}]"][:, m + j, j + 1].min() >= 0.99


# -- the truth, tested by ablation -------------------------------------------------------------------
def test_ablating_truth_heads_breaks_induction_and_distractors_do_not(induction):
    model = HookedModel(induction.model)
    truth_heads = induction.truth.heads()
    for layer, head in truth_heads:
        result = reproduce_domain(induction, model, [Ablate(f"L{layer}.attn.z[h{head}]")])
        assert result.accuracy < 0.2, (layer, head, result.accuracy)
    others = [(layer, h) for layer in range(2) for h in range(model.dims.n_heads)
              if (layer, h) not in truth_heads]
    assert len(others) == 6
    for layer, head in others:
        assert reproduce_domain(induction, model, [Ablate(f"L{layer}.attn.z[h{head}]")]).exact
    everything_else = [Ablate(f"L{layer}.attn.z[h{head}]") for layer, head in others]
    assert reproduce_domain(induction, model, everything_else).exact
    # the L1 distractors do write to the logits: ablating them moves logits, not answers
    ids = induction.domain()[:8]
    assert not torch.allclose(model.run(ids, everything_else), model.run(ids))
    assert_clean(model)


def test_ablating_the_mlp_breaks_successor_and_heads_do_not(successor):
    model = HookedModel(successor.model)
    assert reproduce_domain(successor, model, [Ablate("L0.mlp_out")]).accuracy < 0.2
    assert reproduce_domain(successor, model, [Ablate("L0.mlp.hidden")]).accuracy < 0.2
    heads = [Ablate(f"L0.attn.z[h{h}]") for h in range(model.dims.n_heads)]
    assert reproduce_domain(successor, model, heads).exact
    assert_clean(model)


# -- normalization "none" on random weights: the runtime's basic guarantees ------------------------
@pytest.fixture(scope="module")
def plain_toy():
    torch.manual_seed(0)
    hf = ToyForCausalLM(ToyConfig(vocab_size=32, d_model=64, d_mlp=128, n_layers=2, n_heads=4,
                                  d_head=16, normalization="none", attn_implementation="eager",
                                  initializer_range=0.15)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return hf


def test_no_norm_toy_identity_everywhere_and_generation(plain_toy):
    model = HookedModel(plain_toy)
    ids = tokens(2, 7)
    with torch.no_grad():
        expected = plain_toy(ids).logits
    assert torch.equal(model.run(ids), expected)
    sites = ["embed", "ln_final", "logits"] + [
        f"L{layer}.{k}" for layer in range(2)
        for k in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "mlp.hidden",
                  "attn.z", "attn.q", "attn.k", "attn.v", "attn.z[h2]", "attn.v[h3]")
    ]
    assert torch.equal(model.run(ids, [Apply(s, fn=lambda x: x.clone()) for s in sites]), expected)
    fast = model.generate(ids, max_new_tokens=4)
    slow = model.generate(ids, max_new_tokens=4, use_kv_cache=False)
    assert torch.equal(fast.tokens, slow.tokens)
    with torch.no_grad():
        assert torch.equal(fast.tokens, plain_toy.generate(ids, max_new_tokens=4, do_sample=False))
    assert_clean(model)


def test_bidirectional_model_patching_does_not_reuse_prefixes():
    """A non-causal model (tracr's kind): a later token changes earlier positions, so the
    batched sweep must not start rows at the patched position; it equals the naive loop."""
    from interplab.analyses.patching import PatchingConfig, activation_patching
    torch.manual_seed(0)
    hf = ToyForCausalLM(ToyConfig(vocab_size=32, n_ctx=8, d_model=16, n_layers=2, n_heads=2, d_head=8,
                                  d_mlp=16, causal=False, initializer_range=0.3)).eval()
    model = HookedModel(hf)
    clean, corrupt = tokens(3, 6), tokens(3, 6, seed=1)
    ans, wrong = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    fast = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(n_resamples=50))
    naive = activation_patching(model, clean, corrupt, ans, wrong, PatchingConfig(naive=True, n_resamples=50))
    torch.testing.assert_close(fast.raw, naive.raw, rtol=1e-5, atol=1e-5)
