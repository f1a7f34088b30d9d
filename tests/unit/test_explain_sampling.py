"""explain.sampling: disjoint halves, activating / non-activating / hard-negative windows,
determinism, notes for rare latents; no model (synthetic activation sources)."""

from __future__ import annotations

import pytest
import torch

from interplab.explain.sampling import SampleConfig, TokenSetLatents, collect_acts, sample, split_halves

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = {i: f"t{i}" for i in range(200)}
CFG = SampleConfig(window=8, n_top=4, n_quantile=6, n_explain_neg=5, n_score_pos=10, n_score_neg=10, seed=3)


class Source:
    """Latent 0: token 5 after token 6 (so token 5 alone is a hard negative); latent 1: graded,
    token id / 10 on ids 10..19; latent 2: token 199 only (rare); latent 3: token 7 anywhere."""

    latents = [0, 1, 2, 3]

    def acts(self, tokens):
        prev = torch.nn.functional.pad(tokens, (1, 0), value=-1)[:, :-1]
        a0 = ((tokens == 5) & (prev == 6)).float()
        a1 = torch.where((tokens >= 10) & (tokens < 20), tokens / 10, torch.zeros(()))
        return torch.stack([a0, a1, (tokens == 199).float(), (tokens == 7).float()], -1)


@pytest.fixture(scope="module")
def contexts():
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randint(0, 199, (120, 32), generator=gen)
    ctx[:60:4, 10] = 6  # some "6 5" bigrams
    ctx[:60:4, 11] = 5
    ctx[5, 3] = ctx[90, 20] = 199  # a rare token: two contexts
    return ctx


@pytest.fixture(scope="module")
def samples(contexts):
    return sample(Source(), contexts, VOCAB, CFG)


def _all(s):
    return [*s.explain, *s.explain_neg, *s.score_pos, *s.score_neg]


def test_halves_are_disjoint_and_cover(contexts, samples):
    ex, sc = split_halves(contexts.shape[0], CFG.seed)
    assert set(ex.tolist()).isdisjoint(sc.tolist()) and len(ex) + len(sc) == contexts.shape[0]
    for s in samples.values():
        explain_ctx = {e.context for e in [*s.explain, *s.explain_neg]}
        score_ctx = {e.context for e in [*s.score_pos, *s.score_neg]}
        assert explain_ctx <= set(ex.tolist()) and score_ctx <= set(sc.tolist())
        assert explain_ctx.isdisjoint(score_ctx)
        # one window per context within a half
        assert len(explain_ctx) == len(s.explain) + len(s.explain_neg)
        assert len(score_ctx) == len(s.score_pos) + len(s.score_neg)


def test_windows_match_the_source(contexts, samples):
    acts = collect_acts(Source(), contexts, 7)
    for latent, s in samples.items():
        for e in _all(s):
            assert len(e.ids) == len(e.tokens) == len(e.acts) == CFG.window
            row = contexts[e.context].tolist()
            start = next(i for i in range(len(row) - CFG.window + 1) if row[i:i + CFG.window] == e.ids)
            assert e.acts == acts[e.context, start:start + CFG.window, latent].tolist()
            assert e.tokens == [VOCAB[i] for i in e.ids]


def test_activating_and_non_activating(samples):
    for s in samples.values():
        assert all(e.max > 0 and e.kind in ("top", "quantile") for e in [*s.explain, *s.score_pos])
        assert all(not any(e.acts) and e.kind in ("random", "hard") for e in [*s.explain_neg, *s.score_neg])
    s = samples[1]
    assert [e.kind for e in s.explain] == ["top"] * 4 + ["quantile"] * 6
    tops = [e.max for e in s.explain[:4]]
    assert tops == sorted(tops, reverse=True) and tops[0] == pytest.approx(1.9)
    assert min(tops) >= max(e.max for e in s.explain[4:])
    # the scoring positives span the quantiles, not only the top
    assert len({round(e.max, 3) for e in s.score_pos}) >= 4
    assert (len(s.explain), len(s.explain_neg), len(s.score_pos), len(s.score_neg)) == (10, 5, 10, 10)


def test_hard_negatives(samples):
    s = samples[0]
    hard = [e for e in s.score_neg if e.kind == "hard"]
    assert len(hard) == 5  # hard_fraction 0.5 of 10
    for e in hard:
        assert "t5" in e.tokens and not any(e.acts)
    assert not any("hard negatives" in n for n in s.notes)
    # a token-local latent has no hard negatives: random ones instead, with a note
    s3 = samples[3]
    assert all(e.kind == "random" for e in s3.score_neg) and len(s3.score_neg) == 10
    assert any("hard negatives" in n for n in s3.notes)


def test_rare_latent_gets_what_exists_and_a_note(samples):
    s = samples[2]
    assert len(s.explain) + len(s.score_pos) == 2
    assert any("activating explanation windows" in n for n in s.notes)
    assert any("activating scoring windows" in n for n in s.notes)


def test_density(contexts, samples):
    acts = Source().acts(contexts)
    for j, s in samples.items():
        assert s.density == pytest.approx(float((acts[..., j] != 0).double().mean()))


def test_deterministic_and_seeded(contexts, samples):
    again = sample(Source(), contexts, VOCAB, CFG)
    assert again == samples
    other = sample(Source(), contexts, VOCAB, SampleConfig(**{**CFG.__dict__, "seed": 4}))
    assert other != samples


def test_token_set_latents_and_a_tokenizer():
    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

    src = TokenSetLatents([{1, 2}, {3}])
    tokens = torch.tensor([[1, 3, 4, 2]])
    assert src.acts(tokens).tolist() == [[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]]
    s = sample(src, torch.tensor([[1, 3, 4, 2, 5, 6]] * 6), Tok(), SampleConfig(window=3, n_score_neg=2))
    assert s[1].explain[0].tokens == ["<1>", "<3>", "<4>"]
