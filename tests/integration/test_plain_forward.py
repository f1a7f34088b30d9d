"""Nothing attached is the plain HF forward; cached activations are HF's own tensors."""

from __future__ import annotations

import torch

from .families import assert_clean


def test_run_is_bit_identical_to_hf(model, hf_model, ids):
    with torch.no_grad():
        expected = hf_model(ids).logits
    got = model.run(ids)
    assert torch.equal(got, expected)
    assert_clean(model)


def test_single_prompt_1d_ids(model, hf_model, ids):
    with torch.no_grad():
        expected = hf_model(ids[:1]).logits
    assert torch.equal(model.run(ids[0]), expected)


def test_run_with_cache_leaves_logits_and_model_unchanged(model, hf_model, ids, family):
    with torch.no_grad():
        expected = hf_model(ids).logits
    sites = ["embed", "ln_final", "logits"] + [
        f"L{layer}.{k}" for layer in range(family.n_layers)
        for k in ("resid_pre", "resid_post", "attn_out", "mlp_out", "attn.z", "attn.pattern")
    ]
    logits, cache = model.run_with_cache(ids, sites)
    assert torch.equal(logits, expected)
    assert torch.equal(cache["logits"], expected)
    assert len(cache) == len(sites)
    assert_clean(model)
    assert torch.equal(model.run(ids), expected)


def test_cache_matches_hf_hidden_states_and_attentions(model, hf_model, ids, family):
    with torch.no_grad():
        out = hf_model(ids, output_hidden_states=True, output_attentions=True)
    n = family.n_layers
    sites = [f"L{i}.resid_pre" for i in range(n)] + [f"L{i}.resid_post" for i in range(n - 1)]
    sites += [f"L{i}.attn.pattern" for i in range(n)] + ["L0.attn.pattern[h1]"]
    _, cache = model.run_with_cache(ids, sites)
    for i in range(n):
        assert torch.equal(cache[f"L{i}.resid_pre"], out.hidden_states[i]), i
        assert torch.equal(cache[f"L{i}.attn.pattern"], out.attentions[i]), i
    for i in range(n - 1):
        assert torch.equal(cache[f"L{i}.resid_post"], out.hidden_states[i + 1]), i
    assert torch.equal(cache["L0.attn.pattern[h1]"], out.attentions[0][:, 1])


def test_last_layer_logit_lens_equals_logits(model, ids, family):
    last = f"L{family.n_layers - 1}.resid_post"
    logits, cache = model.run_with_cache(ids, [last, "ln_final"])
    a = model.adapter
    with torch.no_grad():
        normed = a.apply_final_norm(cache[last])
        lens = a.apply_unembed(normed)
    assert torch.equal(normed, cache["ln_final"])
    assert torch.equal(lens, logits)


def test_residual_decomposition(model, ids, family):
    """resid_post = resid_pre + attn_out + mlp_out, and resid_mid = resid_pre + attn_out: the
    adapter's attn_out / mlp_out are exactly what the block adds to the residual stream."""
    n = family.n_layers
    kinds = ["resid_pre", "resid_post", "attn_out", "mlp_out"]
    if not family.parallel:
        kinds.append("resid_mid")
    _, c = model.run_with_cache(ids, [f"L{i}.{k}" for i in range(n) for k in kinds])
    for i in range(n):
        pre, attn, mlp = c[f"L{i}.resid_pre"], c[f"L{i}.attn_out"], c[f"L{i}.mlp_out"]
        torch.testing.assert_close(c[f"L{i}.resid_post"], pre + attn + mlp, atol=1e-5, rtol=0)
        if not family.parallel:
            assert torch.equal(c[f"L{i}.resid_mid"], pre + attn)
            assert torch.equal(c[f"L{i}.resid_post"], c[f"L{i}.resid_mid"] + mlp)
        if i + 1 < n:
            assert torch.equal(c[f"L{i}.resid_post"], c[f"L{i + 1}.resid_pre"])


def test_cache_shapes_follow_site_shapes(model, ids, family):
    sites = ["embed", "L0.attn.q", "L0.attn.k", "L0.attn.v", "L0.attn.z", "L0.mlp.hidden",
             "L0.attn.k[h1]", "L0.attn.pattern", "logits"]
    _, cache = model.run_with_cache(ids, sites)
    b, s = ids.shape
    for site in sites:
        expected = model.site_shape(site)
        if site.endswith("pattern"):
            assert cache[site].shape == (b, *expected, s, s)
        else:
            assert cache[site].shape == (b, s, *expected), site
    assert cache["L0.attn.k"].shape[2] == family.n_kv_heads
    assert cache["L0.attn.q"].shape[2] == family.n_heads
