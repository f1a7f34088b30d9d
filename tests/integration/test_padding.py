"""A left-padded batch computes what each prompt computes alone."""

from __future__ import annotations

import torch

from interplab.runtime.inputs import Batch

from .families import assert_clean

ATOL = 1e-5


def _real(logits_row: torch.Tensor, n: int) -> torch.Tensor:
    return logits_row[-n:]  # left padding: the real tokens are the last n


def test_padded_logits_equal_single_prompts(model, hf_model, prompts, padded):
    batched = model.run(padded)
    for i, p in enumerate(prompts):
        alone = model.run(p[None])
        torch.testing.assert_close(_real(batched[i], len(p)), alone[0], atol=ATOL, rtol=0)
    # and interplab's padded run is what HF computes for the same padded inputs
    with torch.no_grad():
        hf = hf_model(**padded, position_ids=(padded["attention_mask"].cumsum(-1) - 1).clamp(min=0))
    for i, p in enumerate(prompts):
        torch.testing.assert_close(_real(batched[i], len(p)), _real(hf.logits[i], len(p)),
                                   atol=ATOL, rtol=0)


def test_padded_cache_at_positions_equals_single_prompts(model, prompts, padded, family):
    sites = ["embed", "ln_final", "logits"] + [
        f"L{layer}.{k}" for layer in range(family.n_layers)
        for k in ("resid_pre", "resid_post", "attn_out", "mlp_out", "attn.z[h1]", "attn.q",
                  "attn.k", "attn.v", "mlp.hidden")
    ]
    if not family.parallel:
        sites.append("L0.resid_mid")
    logits, cache = model.run_with_cache(padded, sites, positions=[-1, 0])
    assert cache.positions == (-1, 0)
    for i, p in enumerate(prompts):
        _, alone = model.run_with_cache(p[None], sites, positions=[-1, 0])
        for site in sites:
            assert cache[site].shape[1] == 2
            torch.testing.assert_close(cache[site][i], alone[site][0], atol=ATOL, rtol=0,
                                       msg=lambda m, s=site, r=i: f"{s} row {r}: {m}")
        # the gathered logits are those of the prompt's last and first real tokens
        n = len(p)
        assert torch.equal(cache["logits"][i, 0], logits[i, -1])
        assert torch.equal(cache["logits"][i, 1], logits[i, -n])
    assert_clean(model)


def test_padded_full_cache_keeps_the_padded_layout(model, prompts, padded):
    logits, cache = model.run_with_cache(padded, ["L0.resid_post", "logits"])
    assert torch.equal(cache.attention_mask, padded["attention_mask"])
    assert torch.equal(cache["logits"], logits)
    for i, p in enumerate(prompts):
        _, alone = model.run_with_cache(p[None], ["L0.resid_post"])
        torch.testing.assert_close(_real(cache["L0.resid_post"][i], len(p)), alone["L0.resid_post"][0],
                                   atol=ATOL, rtol=0)


def test_attention_pattern_of_padded_prompt(model, prompts, padded):
    _, cache = model.run_with_cache(padded, ["L1.attn.pattern"])
    for i, p in enumerate(prompts):
        n = len(p)
        _, alone = model.run_with_cache(p[None], ["L1.attn.pattern"])
        real = cache["L1.attn.pattern"][i, :, -n:, -n:]
        torch.testing.assert_close(real, alone["L1.attn.pattern"][0], atol=ATOL, rtol=0)
        if n < padded["input_ids"].shape[1]:  # no attention on padding from real queries
            assert cache["L1.attn.pattern"][i, :, -n:, :-n].abs().max() == 0


def test_batch_object_positions(model, padded):
    batch = model.to_batch(padded)
    assert isinstance(batch, Batch)
    assert batch.lengths.tolist() == [7, 4, 5]
    assert batch.positions[1].tolist() == [-1, -1, -1, 0, 1, 2, 3]


def test_right_padding_runs_like_left_padding(model, prompts, padded):
    """run() takes either padding; positions follow the mask, so -1 is each prompt's last token."""
    width = padded["input_ids"].shape[1]
    ids = torch.zeros_like(padded["input_ids"])
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, : len(p)] = p
        mask[i, : len(p)] = 1
    right = {"input_ids": ids, "attention_mask": mask}
    logits, cache = model.run_with_cache(right, ["L1.resid_post", "logits"], positions=[-1])
    left_logits, left_cache = model.run_with_cache(padded, ["L1.resid_post", "logits"],
                                                   positions=[-1])
    for i, p in enumerate(prompts):
        torch.testing.assert_close(logits[i, : len(p)], left_logits[i, width - len(p):],
                                   atol=ATOL, rtol=0)
    torch.testing.assert_close(cache["L1.resid_post"], left_cache["L1.resid_post"], atol=ATOL,
                               rtol=0)
    torch.testing.assert_close(cache["logits"], left_cache["logits"], atol=ATOL, rtol=0)


def test_pattern_cached_at_positions(model, prompts, padded):
    _, cache = model.run_with_cache(padded, ["L0.attn.pattern", "L0.attn.pattern[h2]"],
                                    positions=[-1])
    width = padded["input_ids"].shape[1]
    assert cache["L0.attn.pattern"].shape == (3, 4, 1, width)
    assert torch.equal(cache["L0.attn.pattern[h2]"], cache["L0.attn.pattern"][:, 2])
    for i, p in enumerate(prompts):
        _, alone = model.run_with_cache(p[None], ["L0.attn.pattern"], positions=[-1])
        torch.testing.assert_close(cache["L0.attn.pattern"][i, :, :, width - len(p):],
                                   alone["L0.attn.pattern"][0], atol=ATOL, rtol=0)
