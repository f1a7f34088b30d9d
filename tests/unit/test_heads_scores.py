"""Head-detector scores on hand-made attention patterns whose right answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from interplab.analyses.heads import (
    duplicate_mask,
    duplicate_token_scores,
    entropy_scores,
    first_token_scores,
    induction_mask,
    induction_scores,
    previous_token_scores,
    repeated_random_tokens,
    score_pattern,
)
from interplab.core.errors import InputError

T = 6  # length of the random block; sequences are r r with r a permutation (no repeats in r)


def repeated(batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    r = torch.stack([torch.randperm(20, generator=g)[:T] + 3 for _ in range(batch)])
    return torch.cat([r, r], 1)


def pattern(targets: list[int], batch: int = 2, heads: int = 3) -> torch.Tensor:
    """Every query i attends only to targets[i]."""
    n = len(targets)
    p = torch.zeros(batch, heads, n, n)
    p[:, :, torch.arange(n), torch.tensor(targets)] = 1.0
    return p


def previous() -> torch.Tensor:
    return pattern([0, *range(2 * T - 1)])


def induction() -> torch.Tensor:  # first copy: self; second copy i -> i - T + 1
    return pattern([*range(T), *(i - T + 1 for i in range(T, 2 * T))])


def duplicate() -> torch.Tensor:  # first copy: self; second copy i -> i - T
    return pattern([*range(T), *(i - T for i in range(T, 2 * T))])


def test_perfect_previous_token_head():
    tok = repeated()
    scores = score_pattern(previous(), tok)
    assert torch.equal(scores["previous_token"], torch.ones(2, 3))
    assert torch.equal(scores["induction"], torch.zeros(2, 3))
    assert torch.equal(scores["duplicate_token"], torch.zeros(2, 3))


def test_perfect_induction_head():
    tok = repeated()
    assert torch.equal(induction_scores(induction(), tok), torch.ones(2, 3))
    assert torch.equal(duplicate_token_scores(induction(), tok), torch.zeros(2, 3))
    assert torch.equal(previous_token_scores(induction()), torch.zeros(2, 3))


def test_perfect_duplicate_token_head():
    tok = repeated()
    assert torch.equal(duplicate_token_scores(duplicate(), tok), torch.ones(2, 3))
    assert torch.equal(induction_scores(duplicate(), tok), torch.zeros(2, 3))


def test_split_attention_scores_its_share():
    tok = repeated()
    mixed = 0.25 * induction() + 0.75 * previous()
    torch.testing.assert_close(induction_scores(mixed, tok), torch.full((2, 3), 0.25))
    # The induction share never lands on i - 1 (T > 2), so previous-token is the other share.
    torch.testing.assert_close(previous_token_scores(mixed), torch.full((2, 3), 0.75))


def test_heads_are_scored_separately():
    tok = repeated(1)
    p = torch.cat([induction()[:1, :1], previous()[:1, :1]], 1)  # head 0 induction, head 1 previous
    torch.testing.assert_close(induction_scores(p, tok), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(previous_token_scores(p), torch.tensor([[0.0, 1.0]]))


def test_summaries():
    n = 2 * T
    sink = pattern([0] * n)
    assert torch.equal(first_token_scores(sink), torch.ones(2, 3))
    assert torch.equal(entropy_scores(sink), torch.zeros(2, 3))
    uniform = torch.ones(n, n).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(2, 3, n, n)
    expected = sum(math.log(i + 1) for i in range(n)) / n
    torch.testing.assert_close(entropy_scores(uniform), torch.full((2, 3), expected))


def test_masks_follow_tokens():
    tok = torch.tensor([[5, 7, 5, 7, 5]])
    dup = duplicate_mask(tok)[0]
    assert dup[2].tolist() == [True, False, False, False, False]
    assert dup[4].tolist() == [True, False, True, False, False]
    ind = induction_mask(tok)[0]
    assert ind[2].tolist() == [False, True, False, False, False]  # the 7 after the first 5
    assert ind[4].tolist() == [False, True, False, True, False]
    assert not ind[1].any()  # no earlier 7


def test_no_repeats_gives_nan():
    tok = torch.arange(5)[None]
    p = pattern(list(range(5)), batch=1)
    assert torch.isnan(induction_scores(p, tok)).all()
    assert torch.isnan(duplicate_token_scores(p, tok)).all()


def test_repeated_random_tokens():
    ids = repeated_random_tokens(50, 8, 32, exclude=(0, 1, 2), bos=1, seed=3)
    assert ids.shape == (50, 17)
    assert (ids[:, 0] == 1).all()
    assert torch.equal(ids[:, 1:9], ids[:, 9:])
    assert ids[:, 1:].min() >= 3 and ids.max() < 32
    assert torch.equal(ids, repeated_random_tokens(50, 8, 32, exclude=(0, 1, 2), bos=1, seed=3))
    assert not torch.equal(ids, repeated_random_tokens(50, 8, 32, exclude=(0, 1, 2), bos=1, seed=4))
    assert repeated_random_tokens(2, 4, 10).shape == (2, 8)
    with pytest.raises(InputError, match="remain"):
        repeated_random_tokens(2, 4, 3, exclude=(0, 1))


def test_bad_shapes():
    with pytest.raises(InputError, match="q_pos, k_pos"):
        previous_token_scores(torch.zeros(2, 3, 4, 1))
    with pytest.raises(InputError, match="tokens must be"):
        induction_scores(torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, dtype=torch.long))
