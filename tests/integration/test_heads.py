"""Head detectors on tiny random models: scores in range, CIs around the mean, and the same
numbers as scoring HF's own attention probabilities (``output_attentions``) by hand."""

from __future__ import annotations

import pytest
import torch

from interplab import HookedModel
from interplab.analyses.heads import (
    DETECTORS,
    HeadDetectionConfig,
    detect_heads,
    score_heads,
    score_pattern,
)
from interplab.core.errors import ConfigError

from .families import build

CFG = HeadDetectionConfig(n_sequences=12, half_length=8, batch_size=5, n_resamples=300)


@pytest.fixture(scope="module", params=["llama_gqa", "gemma3", "gpt2"])
def detected(request):
    model = HookedModel(build(request.param))
    return model, detect_heads(model, CFG)


def test_scores_in_range_with_cis_around_the_mean(detected):
    model, res = detected
    shape = (model.dims.n_layers, model.dims.n_heads)
    for name in DETECTORS:
        per_seq = res.per_sequence[name]
        assert per_seq.shape == (CFG.n_sequences, *shape)
        assert bool(((per_seq >= 0) & (per_seq <= 1 + 1e-6)).all()), name
        ci = res.ci[name]
        assert ci.estimate.shape == shape
        torch.testing.assert_close(ci.estimate, per_seq.double().mean(0))
        assert bool((ci.low <= ci.estimate + 1e-9).all() and (ci.estimate <= ci.high + 1e-9).all()), name
    assert res.ci["entropy"].estimate.min() > 0  # random attention is spread out
    top = res.top("induction", 3)
    assert len(top) == 3 and top[0][2] >= top[1][2] >= top[2][2]
    with pytest.raises(ConfigError, match="Unknown score"):
        res.top("nope")


def test_sequences_are_repeated_random_tokens_without_specials(detected):
    model, res = detected
    ids = res.tokens
    assert ids.shape == (CFG.n_sequences, 2 * CFG.half_length + 1)
    assert (ids[:, 0] == model.hf.config.bos_token_id).all()
    assert torch.equal(ids[:, 1 : 1 + CFG.half_length], ids[:, 1 + CFG.half_length :])
    assert not bool(torch.isin(ids[:, 1:], torch.tensor([0, 1, 2])).any())  # pad, bos, eos
    again = detect_heads(model, CFG)
    assert torch.equal(again.tokens, ids) and torch.equal(again.per_sequence["induction"], res.per_sequence["induction"])


def test_equals_scoring_hf_attentions_by_hand(detected):
    model, res = detected
    ids = res.tokens[:4]
    with torch.no_grad():
        attentions = model.hf(ids, output_attentions=True).attentions  # per layer [b, h, q, k]
    ours = score_heads(model, ids, batch_size=3)
    for name in ours:
        ref = torch.stack([score_pattern(a, ids)[name] for a in attentions], 1)
        torch.testing.assert_close(ours[name], ref, atol=1e-6, rtol=1e-5)


def test_refuses_what_it_cannot_run():
    model = HookedModel(build("llama_gqa"))  # 64 positions
    with pytest.raises(ConfigError, match="lower half_length to at most 31"):
        detect_heads(model, HeadDetectionConfig(half_length=40))
    for bad in (dict(n_sequences=1), dict(half_length=1), dict(batch_size=0), dict(confidence=0.0)):
        with pytest.raises(ConfigError):
            HeadDetectionConfig(**bad)
    no_bos = detect_heads(model, HeadDetectionConfig(n_sequences=4, half_length=5, prepend_bos=False, n_resamples=100))
    assert no_bos.tokens.shape == (4, 10)
