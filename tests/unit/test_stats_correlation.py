"""Correlations against numpy/scipy, tau-b with ties, and their bootstrap CI."""

import re

import numpy as np
import pytest
import torch

from interplab.core.errors import ConfigError, InputError
from interplab.stats import CI, correlation_ci, kendall_tau, pearson, spearman


def _data(seed: int, n: int = 50, ties: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.6 * x + rng.normal(size=n)
    if ties:
        x, y = np.round(x * 2), np.round(y)
    return x, y


def test_pearson_matches_numpy():
    for seed in range(3):
        x, y = _data(seed)
        assert float(pearson(torch.tensor(x), torch.tensor(y))) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_rank_correlations_match_scipy(ties):
    stats = pytest.importorskip("scipy.stats")
    for seed in range(3):
        x, y = _data(seed, ties=ties)
        if ties:
            assert len(np.unique(x)) < len(x) and len(np.unique(y)) < len(y)
        tx, ty = torch.tensor(x), torch.tensor(y)
        assert float(spearman(tx, ty)) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert float(kendall_tau(tx, ty)) == pytest.approx(stats.kendalltau(x, y, variant="b").statistic, abs=1e-12)


def test_kendall_tau_b_by_hand():
    # x = 1 1 2 3, y = 1 2 2 3. Pairs (6): (12) tie x; (13) C; (14) C; (23) tie y; (24) C; (34) C.
    # n_c = 4, n_d = 0; pairs untied in x = 5, in y = 5 -> tau_b = 4 / 5.
    x = torch.tensor([1.0, 1.0, 2.0, 3.0])
    y = torch.tensor([1.0, 2.0, 2.0, 3.0])
    assert float(kendall_tau(x, y)) == pytest.approx(0.8)
    assert float(kendall_tau(x, -y)) == pytest.approx(-0.8)


def test_batched_equals_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 2, 20, generator=g), torch.randn(3, 2, 20, generator=g)
    for fn in (pearson, spearman, kendall_tau):
        out = fn(x, y)
        assert out.shape == (3, 2)
        for i in range(3):
            for j in range(2):
                assert float(fn(x[i, j], y[i, j])) == pytest.approx(float(out[i, j]), abs=1e-12)


def test_correlation_ci_matches_scipy_paired_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    x, y = _data(4, n=40)

    def r(a, b, axis=-1):
        a = a - a.mean(axis, keepdims=True)
        b = b - b.mean(axis, keepdims=True)
        return (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))

    ours = correlation_ci(torch.tensor(x), torch.tensor(y), n_resamples=10000, seed=1)
    ref = stats.bootstrap(
        (x, y), r, paired=True, vectorized=True, n_resamples=10000, method="BCa", rng=np.random.default_rng(1)
    ).confidence_interval
    width = ref.high - ref.low
    assert isinstance(ours, CI) and ours.n == 40 and ours.estimate.shape == ()
    assert float(ours.estimate) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert abs(float(ours.low) - ref.low) < 0.05 * width
    assert abs(float(ours.high) - ref.high) < 0.05 * width


@pytest.mark.parametrize("fn", ["pearson", "spearman", "kendall", kendall_tau])
def test_correlation_ci_contains_estimate_and_is_seeded(fn):
    x, y = _data(5, n=30, ties=True)
    tx, ty = torch.tensor(x), torch.tensor(y)
    a = correlation_ci(tx, ty, fn, n_resamples=500, seed=2)
    b = correlation_ci(tx, ty, fn, n_resamples=500, seed=2)
    c = correlation_ci(tx, ty, fn, n_resamples=500, seed=3)
    assert -1 <= float(a.low) <= float(a.estimate) <= float(a.high) <= 1
    assert float(a.low) > 0  # a clear positive association
    assert torch.equal(a.low, b.low) and not torch.equal(a.low, c.low)


def test_correlation_ci_drops_constant_resamples():
    # n = 5 with three equal x values: some resamples are constant in x and are dropped.
    x = torch.tensor([0.0, 0.0, 0.0, 1.0, 2.0])
    y = torch.tensor([0.1, 0.0, 0.2, 1.0, 2.5])
    ci = correlation_ci(x, y, n_resamples=2000)
    assert torch.isfinite(ci.low) and torch.isfinite(ci.high)


def test_errors_teach():
    with pytest.raises(InputError, match="x is constant"):
        pearson(torch.ones(5), torch.randn(5))
    with pytest.raises(InputError, match="same shape"):
        spearman(torch.randn(5), torch.randn(6))
    with pytest.raises(InputError, match="at least 2 are needed"):
        kendall_tau(torch.randn(1), torch.randn(1))
    with pytest.raises(ConfigError, match=re.escape("unknown correlation 'tau'. Valid choices: 'pearson', 'spearman', 'kendall'")):
        correlation_ci(torch.randn(5), torch.randn(5), "tau")
    with pytest.raises(InputError, match="1-D x and y"):
        correlation_ci(torch.randn(2, 5), torch.randn(2, 5))
    with pytest.raises(InputError, match="one value per row"):
        correlation_ci(torch.randn(8), torch.randn(8), lambda a, b: (a * b).sum())
