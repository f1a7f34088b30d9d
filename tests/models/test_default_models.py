"""Checks on the real pretrained default models (CPU)."""

import pytest
import torch

from interplab import Site, Steer

pytestmark = pytest.mark.models

IOI = "When Mary and John went to the store, John gave a drink to"


def test_ioi_prompt_puts_mary_first(real_model):
    logits = real_model.run(IOI)
    top = real_model.tokenizer.decode([int(logits[0, -1].argmax())])
    assert top == " Mary"


def test_nothing_attached_is_bit_identical_to_hf(real_model):
    batch = real_model.to_batch(IOI)
    with torch.no_grad():
        expected = real_model.hf(batch.input_ids).logits
    assert torch.equal(real_model.run(batch), expected)
    assert real_model.n_torch_hooks == 0


def test_last_resid_post_through_final_norm_and_unembed_is_the_logits(real_model):
    last = Site(real_model.dims.n_layers - 1, "resid_post")
    logits, cache = real_model.run_with_cache(IOI, [last])
    a = real_model.adapter
    with torch.no_grad():
        lens = a.apply_unembed(a.apply_final_norm(cache[last]))
    assert torch.equal(lens, logits)


def test_padded_batch_matches_single_prompts(real_model):
    prompts = [IOI, "The capital of France is"]
    batch_logits = real_model.run(prompts)
    for i, p in enumerate(prompts):
        alone = real_model.run(p)[0, -1]
        torch.testing.assert_close(batch_logits[i, -1], alone, atol=2e-4, rtol=1e-4)


def test_generation_with_steering_matches_the_no_cache_reference(real_model):
    vec = torch.randn(real_model.dims.d_model, generator=torch.Generator().manual_seed(0))
    steer = [Steer("L3.resid_post", vector=vec, scale=4.0, positions=None)]
    a = real_model.generate(IOI, 4, steer)
    b = real_model.generate(IOI, 4, steer, use_kv_cache=False)
    assert torch.equal(a.new_tokens, b.new_tokens)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-3, rtol=1e-4)
    plain = real_model.generate(IOI, 4)
    assert plain.texts[0].startswith(" Mary")
