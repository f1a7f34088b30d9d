"""Dictionary metrics pinned on hand-computed numbers, and streaming equals all-at-once."""

from __future__ import annotations

import math

import pytest
import torch

from interplab.core.errors import InputError
from interplab.dictionary import metrics as M


def test_l0_counts_nonzero_latents_per_token():
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, -3.0]])
    assert M.l0(z) == 1.5  # (2 + 1) / 2


def test_mse_sums_features_and_averages_tokens():
    target = torch.zeros(2, 2)
    recon = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    assert M.mse(recon, target) == 3.0  # (1 + 4 + 0 + 1) / 2 tokens
    assert torch.equal(M.per_feature_mse(recon, target), torch.tensor([0.5, 2.5], dtype=torch.float64))


def test_fvu_is_about_the_mean_not_zero():
    # Feature 0 has mean 11 and deviations +-1 (variance sum 2); feature 1 is constant 0.
    target = torch.tensor([[10.0, 0.0], [12.0, 0.0]])
    recon = torch.tensor([[11.0, 0.0], [11.0, 0.0]])  # predicts the mean: explains nothing
    assert M.fvu(recon, target) == 1.0  # SSE 2 / 2
    assert M.explained_variance(recon, target) == 0.0
    # The field bug: variance about zero would give 1 - 2/244 ~ 0.99.
    about_zero = 1 - float((recon - target).pow(2).sum() / target.pow(2).sum())
    assert about_zero == pytest.approx(1 - 2 / 244)
    assert abs(about_zero - M.explained_variance(recon, target)) > 0.9


def test_fvu_hand_numbers():
    target = torch.tensor([[1.0, 2.0], [3.0, 6.0]])  # means 2, 4; SS about mean = 1+1+4+4 = 10
    recon = torch.tensor([[1.0, 3.0], [2.0, 6.0]])  # SSE = 1 + 1 = 2
    assert M.fvu(recon, target) == pytest.approx(0.2)
    assert M.explained_variance(recon, target) == pytest.approx(0.8)


def test_cosine_and_relative_norm():
    target = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    recon = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert M.cosine_similarity(recon, target) == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert M.relative_norm(recon, target) == pytest.approx((1 / math.sqrt(2) + 2) / 2)
    # A zero reconstruction has cosine 0, not NaN.
    assert M.cosine_similarity(torch.zeros(2, 2), target) == 0.0


def test_density_dead_dense():
    z = torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0],
                      [1.0, 0.0, 0.0, 0.0]] + [[0.0, 0.0, 0.0, 0.0]] * 6)
    d = M.feature_density(z)
    assert d.tolist() == [0.4, 0.1, 0.0, 0.1]
    assert M.dead_latents(d).tolist() == [False, False, True, False]
    # Strictly more than 10%: 0.1 itself is not dense.
    assert M.dense_latents(d).tolist() == [True, False, False, False]
    assert M.dense_latents(d, threshold=0.05).tolist() == [True, True, False, True]


def test_log10_density_histogram():
    density = torch.tensor([0.0, 0.5, 0.01, 0.001, 1.0, 1e-12], dtype=torch.float64)
    h = M.log10_density_histogram(density, bins=8, low=-8.0, high=0.0)
    assert h.n_dead == 1
    assert h.edges.tolist() == [-8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0]
    # -0.3 and 0 -> last bin; -2 -> [-2, -1); -3 -> [-3, -2); -12 -> clamped into bin 0
    assert h.counts.tolist() == [1, 0, 0, 0, 0, 1, 1, 2]
    with pytest.raises(InputError, match="low < high"):
        M.log10_density_histogram(density, low=0.0, high=0.0)


def test_shape_errors_teach():
    with pytest.raises(InputError, match="same shape"):
        M.fvu(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(InputError, match="at least one token"):
        M.mse(torch.zeros(0, 2), torch.zeros(0, 2))


def test_streaming_equals_concatenation():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(103, 8, generator=g) * 3 + 50  # a large mean, as residual streams have
    recon = target + 0.5 * torch.randn(103, 8, generator=g)
    z = torch.relu(torch.randn(103, 16, generator=g) - 1.0)
    stats = M.ReconstructionStats()
    for lo in range(0, 103, 17):  # uneven batches
        stats.update(recon[lo:lo + 17], target[lo:lo + 17], z[lo:lo + 17])
    assert stats.n == 103
    assert stats.fvu == pytest.approx(M.fvu(recon, target), rel=1e-10)
    assert stats.mse == pytest.approx(M.mse(recon, target), rel=1e-10)
    assert stats.cosine_similarity == pytest.approx(M.cosine_similarity(recon, target), rel=1e-10)
    assert stats.relative_norm == pytest.approx(M.relative_norm(recon, target), rel=1e-10)
    assert stats.l0 == pytest.approx(M.l0(z), rel=1e-12)
    assert torch.allclose(stats.density, M.feature_density(z), rtol=0, atol=0)
    firing = (z != 0).sum(0)
    mean_act = z.double().sum(0) / firing
    assert torch.allclose(stats.mean_activation_when_firing, mean_act, equal_nan=True)
    res = stats.result()
    assert res.n_dead == int(M.dead_latents(M.feature_density(z)).sum())
    assert res.explained_variance == pytest.approx(1 - res.fvu)


def test_empty_stats_raise():
    with pytest.raises(InputError, match="no tokens yet"):
        _ = M.ReconstructionStats().fvu
