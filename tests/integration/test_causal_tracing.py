"""Causal tracing on tiny random models: the properties the method claims, not saved numbers.

Zero noise leaves nothing to restore; restoring the last layer's residual at the last position
is the clean run; the batched sweep (with prefix reuse) equals the one-forward-per-cell loop;
noise is deterministic in the seed and fresh for every prompt.
"""

from __future__ import annotations

import pytest
import torch

from interplab import HookedModel
from interplab.analyses.causal_tracing import (
    CausalTracingConfig,
    causal_tracing,
    embedding_std,
    noise_draws,
    restored_layers,
)
from interplab.core.errors import ConfigError, InputError

from .families import build, tokens

N_PROMPTS, N_POS = 3, 6
SUBJECTS = [[1, 2], [2], [0, 1, 2]]


@pytest.fixture(scope="module", params=["llama_gqa", "gemma3", "gpt2"])
def traced(request) -> HookedModel:
    return HookedModel(build(request.param))


@pytest.fixture(scope="module")
def prompts() -> torch.Tensor:
    return tokens(N_PROMPTS, N_POS, seed=3)


def answers(n: int = N_PROMPTS, seed: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return tokens(n, seed=seed), tokens(n, seed=seed + 1)


def fast(**kw) -> CausalTracingConfig:
    return CausalTracingConfig(**{"n_resamples": 200, **kw})


def test_zero_noise_restores_everything(traced, prompts):
    a, _ = answers()
    res = causal_tracing(traced, prompts, SUBJECTS, a, config=fast(noise_scale=0.0))
    assert torch.allclose(res.corrupt_metric, res.clean_metric, atol=1e-6)
    clean = res.clean_metric[:, None, None].expand_as(res.raw)
    assert torch.allclose(res.raw, clean, atol=1e-6)
    assert torch.isnan(res.effects).all() and res.summary is None  # no effect to normalise


def test_last_layer_last_position_restores_clean(traced, prompts):
    a, w = answers()
    last = traced.dims.n_layers - 1
    for metric in ("prob", "logit_diff"):
        cfg = fast(metric=metric, layers=(last,), positions=(-1,), n_noise=2)
        res = causal_tracing(traced, prompts, SUBJECTS, a, w, config=cfg)
        assert res.raw.shape == (N_PROMPTS, 1, 1)
        assert torch.allclose(res.raw[:, 0, 0], res.clean_metric, atol=1e-5)
        assert float((res.corrupt_metric - res.clean_metric).abs().max()) > 0  # the noise bites


@pytest.mark.parametrize("kind, window", [("resid_post", 10), ("mlp_out", 2), ("attn_out", 3)])
def test_batched_equals_naive(traced, prompts, kind, window):
    a, w = answers()
    cfg = dict(kind=kind, window=window, n_noise=2, metric="logit_diff", max_rows=7)
    fast_res = causal_tracing(traced, prompts, SUBJECTS, a, w, config=fast(**cfg))
    naive = causal_tracing(traced, prompts, SUBJECTS, a, w, config=fast(naive=True, **cfg))
    torch.testing.assert_close(fast_res.raw, naive.raw, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_res.corrupt_metric, naive.corrupt_metric, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_res.clean_metric, naive.clean_metric)
    assert fast_res.effects.shape == (N_PROMPTS, traced.dims.n_layers, N_POS)
    assert fast_res.summary.mean.shape == (traced.dims.n_layers, N_POS)


def test_without_prefix_reuse_equals_naive(traced, prompts):
    a, _ = answers()
    one = causal_tracing(traced, prompts, SUBJECTS, a, config=fast(reuse_prefix=False, max_rows=5))
    ref = causal_tracing(traced, prompts, SUBJECTS, a, config=fast(naive=True))
    torch.testing.assert_close(one.raw, ref.raw, atol=1e-6, rtol=1e-5)


def test_positions_before_the_subject_equal_the_corrupted_run(traced, prompts):
    # Restoring a clean state where the corrupted run is still clean changes nothing.
    a, _ = answers()
    res = causal_tracing(traced, prompts[1:2], [[3, 4]], a[1:2], config=fast(positions=(0, 1, 2)))
    corrupt = res.corrupt_metric[:, None, None].expand_as(res.raw)
    torch.testing.assert_close(res.raw, corrupt, atol=1e-6, rtol=1e-5)


def test_noise_is_seeded_and_fresh_per_prompt():
    a = noise_draws(0, 0, 2, 3, 8)
    assert torch.equal(a, noise_draws(0, 0, 2, 3, 8))
    assert not torch.allclose(a, noise_draws(1, 0, 2, 3, 8))  # another seed
    assert not torch.allclose(a, noise_draws(0, 1, 2, 3, 8))  # another prompt
    assert not torch.allclose(a[0], a[1])  # another draw
    assert abs(float(a.std()) - 1.0) < 0.35


def test_identical_prompts_get_different_noise():
    model = HookedModel(build("llama_gqa"))
    same = tokens(1, N_POS, seed=3).repeat(2, 1)
    a = torch.tensor([5, 5])
    res = causal_tracing(model, same, [[1, 2], [1, 2]], a, config=fast(positions=(-1,)))
    assert torch.equal(res.clean_metric[0], res.clean_metric[1])
    assert not torch.allclose(res.corrupt_metric[0], res.corrupt_metric[1])
    again = causal_tracing(model, same, [[1, 2], [1, 2]], a, config=fast(positions=(-1,)))
    assert torch.equal(res.raw, again.raw) and torch.equal(res.corrupt_metric, again.corrupt_metric)
    other = causal_tracing(model, same, [[1, 2], [1, 2]], a, config=fast(positions=(-1,), seed=1))
    assert not torch.allclose(res.corrupt_metric, other.corrupt_metric)


def test_noise_std_is_scale_times_embedding_std():
    model = HookedModel(build("gemma3"))
    emb = model.adapter.embed()
    expected = float(emb.weight.detach().double().std() * emb.embed_scale.double())  # Gemma: x sqrt(d)
    assert embedding_std(model) == pytest.approx(expected, rel=1e-6)
    a, _ = answers()
    res = causal_tracing(model, tokens(3, N_POS, seed=3), SUBJECTS, a,
                         config=fast(positions=(-1,), noise_scale=2.0))
    assert res.noise_std == pytest.approx(2.0 * expected, rel=1e-6)
    fixed = causal_tracing(model, tokens(3, N_POS, seed=3), SUBJECTS, a,
                           config=fast(positions=(-1,), noise_std=0.5))
    assert fixed.noise_std == 0.5


def test_window_follows_rome():
    cfg = CausalTracingConfig(kind="mlp_out", window=10)
    assert restored_layers(7, cfg, 20) == list(range(2, 12))  # L-5 .. L+4
    assert restored_layers(1, cfg, 20) == list(range(0, 6))
    assert restored_layers(18, cfg, 20) == list(range(13, 20))
    assert restored_layers(3, CausalTracingConfig(kind="attn_out", window=3), 5) == [2, 3, 4]
    assert restored_layers(3, CausalTracingConfig(window=3), 5) == [3]  # resid_post: one state


def test_refuses_bad_inputs(prompts):
    model = HookedModel(build("llama_gqa"))
    a, _ = answers()
    with pytest.raises(ConfigError, match="logit_diff"):
        causal_tracing(model, prompts, SUBJECTS, a, config=fast(metric="logit_diff"))
    with pytest.raises(InputError, match="same token length"):
        padded = {"input_ids": prompts, "attention_mask": torch.tensor([[0] + [1] * (N_POS - 1)] * 3)}
        causal_tracing(model, padded, SUBJECTS, a)
    with pytest.raises(InputError, match=r"subject_positions\[1\]"):
        causal_tracing(model, prompts, [[1], [9], [0]], a)
    with pytest.raises(InputError, match="one per prompt"):
        causal_tracing(model, prompts, SUBJECTS[:2], a)
    with pytest.raises(InputError, match="answers"):
        causal_tracing(model, prompts, SUBJECTS, a[:2])
    with pytest.raises(ConfigError, match="layers"):
        causal_tracing(model, prompts, SUBJECTS, a, config=fast(layers=(7,)))
    for bad in (dict(kind="z"), dict(window=0), dict(noise_scale=-1.0), dict(metric="kl"), dict(layers=())):
        with pytest.raises(ConfigError):
            CausalTracingConfig(**bad)
