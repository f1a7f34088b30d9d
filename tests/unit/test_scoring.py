"""Every scoring metric pinned on hand-computed numbers and against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from interplab.core.errors import InputError
from interplab.dictionary import DICTIONARIES, DictionaryConfig
from interplab.groundtruth.scoring import (
    auroc,
    bootstrap_score,
    correlation_matrix,
    feature_recovery,
    hungarian_correlation,
    mean_max_cosine,
    null_control,
    paired_comparison,
    probe_recovery,
    random_dictionary,
)


def test_mean_max_cosine_by_hand():
    true = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # Learned: one exact match of feature 0, one at 45 degrees to both, one pointing along -f1.
    learned = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    r = mean_max_cosine(learned, true)
    s = 1 / math.sqrt(2)
    # Signed: f0 best = 1 (row 0); f1 best = cos 45 (row 1), not the antiparallel row 2.
    assert r.per_true.tolist() == pytest.approx([1.0, s])
    assert r.mmcs == pytest.approx((1 + s) / 2)
    assert r.best_learned.tolist() == [0, 1]
    # Reverse: rows' best true cosines 1, s, 0 (row 2 is -1 with f1 and 0 with f0).
    assert r.per_learned.tolist() == pytest.approx([1.0, s, 0.0])
    assert r.reverse_mmcs == pytest.approx((1 + s) / 3)
    unsigned = mean_max_cosine(learned, true, signed=False)
    assert unsigned.mmcs == pytest.approx(1.0) and unsigned.reverse_mmcs == pytest.approx((2 + s) / 3)
    assert r.recovered(0.9) == 1


def test_mean_max_cosine_refuses_bad_input():
    with pytest.raises(InputError, match="all-zero rows"):
        mean_max_cosine(torch.zeros(2, 3), torch.eye(3))
    with pytest.raises(InputError, match="same space"):
        mean_max_cosine(torch.eye(3), torch.eye(4))


def test_correlation_matrix_by_hand_and_constant_columns():
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # second column constant (a dead latent)
    b = torch.tensor([[1.0, 3.0], [2.0, 1.0], [3.0, 2.0]])
    c = correlation_matrix(a.double(), b.double())
    # corr([1,2,3],[3,1,2]): centred (-1,0,1)·(1,-1,0) = -1, norms sqrt2·sqrt2 -> -0.5.
    assert c.flatten().tolist() == pytest.approx([1.0, -0.5, 0.0, 0.0])


def test_hungarian_by_hand():
    # Latent 0 tracks feature 1, latent 1 tracks feature 0 (negated on one token).
    coeffs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    latents = coeffs[:, [1, 0]].clone()
    r = hungarian_correlation(latents, coeffs)
    assert r.mean == pytest.approx(1.0)
    assert r.learned_index.tolist() == [1, 0] and r.true_index.tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(5, 5), (6, 4), (3, 5)])
def test_hungarian_equals_brute_force(seed, shape):
    m, n = shape
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.rand(40, n, generator=g)
    latents = coeffs @ torch.randn(n, m, generator=g) + 0.5 * torch.randn(40, m, generator=g)
    r = hungarian_correlation(latents, coeffs)
    c = correlation_matrix(latents.double(), coeffs.double())
    k = min(m, n)
    best = max(
        sum(float(c[i, j]) for i, j in zip(rows, cols))
        for rows in itertools.permutations(range(m), k)
        for cols in itertools.combinations(range(n), k)
    )
    assert r.mean == pytest.approx(best / k, abs=1e-12)
    assert len(set(r.learned_index.tolist())) == k == len(set(r.true_index.tolist()))


def test_hungarian_refuses_mismatched_tokens():
    with pytest.raises(InputError, match="same tokens"):
        hungarian_correlation(torch.rand(5, 2), torch.rand(6, 2))


def test_probe_recovery():
    assert probe_recovery(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0])) == pytest.approx(0.6)
    assert probe_recovery(torch.tensor([-1.0, 0.0]), torch.tensor([2.0, 0.0])) == pytest.approx(1.0)
    with pytest.raises(InputError, match="zero vector"):
        probe_recovery(torch.zeros(2), torch.ones(2))


def _auroc_pairs(s, y):
    pos, neg = s[y == 1], s[y == 0]
    total = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos.tolist() for q in neg.tolist())
    return total / (len(pos) * len(neg))


def test_auroc_by_hand_and_brute_force():
    # Positives 3, 2 vs negatives 2, 1: pairs (3>2, 3>1, 2=2, 2>1) -> 3.5 / 4.
    assert auroc(torch.tensor([3.0, 2.0, 2.0, 1.0]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.875)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = torch.randint(0, 5, (30,), generator=g).double()  # many ties
        y = torch.randint(0, 2, (30,), generator=g)
        if 0 < int(y.sum()) < 30:
            assert auroc(s, y) == pytest.approx(_auroc_pairs(s, y), abs=1e-12)
    with pytest.raises(InputError, match="both classes"):
        auroc(torch.rand(4), torch.ones(4))
    with pytest.raises(InputError, match="0/1"):
        auroc(torch.rand(3), torch.tensor([0, 1, 2]))


def test_bootstrap_score_and_paired_comparison():
    res = bootstrap_score(lambda s: float(s), [1, 2, 3, 4, 5], n_resamples=500, seed=0)
    assert res.mean == pytest.approx(3.0) and res.scores.tolist() == [1, 2, 3, 4, 5]
    assert float(res.ci.low) < 3.0 < float(res.ci.high)
    a = torch.tensor([0.9, 0.8, 0.85, 0.95, 0.9, 0.88])
    b = a - torch.tensor([0.1, 0.2, 0.15, 0.1, 0.12, 0.1])
    cmp = paired_comparison(a, b)
    assert cmp.mean_difference == pytest.approx(float((a - b).mean()))
    # All 6 differences positive: exact sign-flip test, only the identity and the all-flip are
    # as extreme two-sided -> p = 2 / 64.
    assert cmp.p_value == pytest.approx(2 / 64) and cmp.n == 6
    with pytest.raises(InputError, match="same units"):
        paired_comparison(a, b[:3])
    with pytest.raises(InputError, match="at least 2 units"):
        bootstrap_score(float, [1])


def test_feature_recovery_of_a_planted_decoder_and_the_null():
    true = torch.nn.functional.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    cfg = DictionaryConfig(arch="topk", d_in=16, d_sae=12, k=2, input_site="x")
    sae = DICTIONARIES.get("topk")(cfg)
    with torch.no_grad():
        sae.W_dec[:8] = true
        sae.W_enc.copy_(sae.W_dec.T)
    g = torch.Generator().manual_seed(1)
    coeffs = torch.rand(300, 8, generator=g) * (torch.rand(300, 8, generator=g) < 0.1)
    acts = coeffs @ true
    score = feature_recovery(sae.eval(), true, acts, coeffs)
    assert score.mmcs == pytest.approx(1.0, abs=1e-6)
    null = null_control(sae, true, acts, coeffs, seed=1)
    assert null.mmcs < 0.8 and null.matched_correlation < score.matched_correlation
    rand = random_dictionary(sae, seed=1)
    assert rand.W_dec.shape == sae.W_dec.shape
    torch.testing.assert_close(rand.W_dec.norm(dim=-1), torch.ones(12))
    assert not torch.equal(rand.W_dec, random_dictionary(sae, seed=2).W_dec)
