"""Generation: the KV-cache path equals the no-cache reference, with interventions at prompt
positions, generated positions and every position; nothing attached equals HF generate."""

from __future__ import annotations

import pytest
import torch

from interplab.interventions import Ablate, Patch, Steer

from .families import assert_clean

ATOL = 1e-5
NEW = 5


def _vec(n: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _both(model, inputs, interventions):
    fast = model.generate(inputs, max_new_tokens=NEW, interventions=interventions)
    slow = model.generate(inputs, max_new_tokens=NEW, interventions=interventions,
                          use_kv_cache=False)
    assert torch.equal(fast.tokens, slow.tokens)
    assert torch.equal(fast.new_tokens, slow.new_tokens)
    torch.testing.assert_close(fast.logits, slow.logits, atol=ATOL, rtol=0)
    assert fast.new_tokens.shape == (fast.tokens.shape[0], NEW)
    assert_clean(model)
    return fast


def test_greedy_equals_hf_generate(model, hf_model, ids):
    ours = model.generate(ids, max_new_tokens=NEW)
    with torch.no_grad():
        theirs = hf_model.generate(ids, max_new_tokens=NEW, do_sample=False, eos_token_id=None)
    assert torch.equal(ours.tokens, theirs)
    assert torch.equal(ours.new_tokens, theirs[:, ids.shape[1]:])
    assert_clean(model)


def test_greedy_equals_hf_generate_left_padded(model, hf_model, padded):
    ours = model.generate(padded, max_new_tokens=NEW)
    with torch.no_grad():
        theirs = hf_model.generate(**padded, max_new_tokens=NEW, do_sample=False,
                                   eos_token_id=None)
    assert torch.equal(ours.tokens, theirs)


def test_first_step_logits_equal_run(model, ids):
    n = ids.shape[1]
    ivs = [Steer("L0.resid_pre", vector=_vec(64, 1), positions=[-1])]
    out = model.generate(ids, max_new_tokens=NEW, interventions=ivs)
    torch.testing.assert_close(out.logits[:, 0], model.run(ids, ivs)[:, -1], atol=ATOL, rtol=0)
    # each step's logits are those of a plain run over the sequence so far (where -1 would
    # mean the sequence's last token, so name the prompt's last token by its index)
    ivs = [Steer("L0.resid_pre", vector=_vec(64, 1), positions=[n - 1])]
    for t in range(NEW):
        seq = out.tokens[:, : ids.shape[1] + t]
        torch.testing.assert_close(out.logits[:, t], model.run(seq, ivs)[:, -1], atol=ATOL, rtol=0)


def test_kv_cache_equals_reference_without_interventions(model, ids, padded):
    _both(model, ids, [])
    _both(model, padded, [])


def test_kv_cache_equals_reference_steer_at_prompt_positions(model, ids, family):
    clean = model.generate(ids, max_new_tokens=NEW)
    ivs = [
        Steer("L0.resid_pre", vector=_vec(64, 1), positions=[1, -1]),
        Steer(f"L{family.n_layers - 1}.attn.z[h1]", vector=_vec(family.d_head, 2), positions=[-2]),
    ]
    steered = _both(model, ids, ivs)
    assert not torch.allclose(steered.logits, clean.logits, atol=1e-3)


def test_kv_cache_equals_reference_steer_everywhere(model, ids, family):
    clean = model.generate(ids, max_new_tokens=NEW)
    ivs = [Steer("L1.resid_pre", vector=_vec(64, 3), positions=None),
           Steer("L0.attn.v[h1]", vector=_vec(family.d_head, 4), positions=None)]
    steered = _both(model, ids, ivs)
    assert not torch.allclose(steered.logits, clean.logits, atol=1e-3)


def test_kv_cache_equals_reference_at_generated_positions(model, ids):
    n = ids.shape[1]
    ivs = [Steer("L0.mlp_out", vector=_vec(64, 5), positions=[n, n + 2]),
           Ablate("L1.attn_out", positions=[n + 1])]
    out = _both(model, ids, ivs)
    clean = model.generate(ids, max_new_tokens=NEW)
    # the first new token comes from the prompt's last position: untouched
    torch.testing.assert_close(out.logits[:, 0], clean.logits[:, 0], atol=ATOL, rtol=0)


def test_kv_cache_equals_reference_left_padded(model, padded, family):
    ivs = [
        Steer("L0.resid_pre", vector=_vec(64, 6), positions=[0, -1]),
        Steer("L1.resid_post", vector=_vec(64, 7), positions=None, rows=[1]),
        Patch("L0.attn.q[h0]", value=_vec(family.d_head, 8), positions=[4], rows=[0, 2]),
        Steer("L0.attn_out", vector=_vec(64, 9, 1.0)),
    ]
    clean = model.generate(padded, max_new_tokens=NEW)
    out = _both(model, padded, ivs)
    assert not torch.allclose(out.logits, clean.logits, atol=1e-3)


def test_padded_generation_equals_prompts_alone(model, prompts, padded):
    ivs = [Steer("L0.resid_pre", vector=_vec(64, 10), positions=[1, -1]),
           Steer("L1.attn_out", vector=_vec(64, 11), positions=None)]
    batch = model.generate(padded, max_new_tokens=NEW, interventions=ivs)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=NEW, interventions=ivs)
        assert torch.equal(batch.new_tokens[i], alone.new_tokens[0])
        torch.testing.assert_close(batch.logits[i], alone.logits[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("positions", [None, "generated"])
def test_kv_cache_equals_reference_resample_ablation(model, ids, positions):
    n = ids.shape[1]
    pool = torch.randn(5, 64, generator=torch.Generator().manual_seed(12))
    pos = None if positions is None else [n, n + 1, n + 2]
    _both(model, ids, [Ablate("L1.resid_pre", mode="resample", value=pool, positions=pos)])


def test_sampling_is_seeded(model, ids):
    a = model.generate(ids, max_new_tokens=NEW, do_sample=True, seed=3, top_k=5)
    b = model.generate(ids, max_new_tokens=NEW, do_sample=True, seed=3, top_k=5,
                       use_kv_cache=False)
    assert torch.equal(a.tokens, b.tokens)
