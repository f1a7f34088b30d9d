"""Bootstrap CIs: coverage, agreement with scipy's BCa, vectorisation, seeding, degenerate cells."""

import re

import numpy as np
import pytest
import torch

from interplab.core.errors import ConfigError, InputError
from interplab.stats import CI, bootstrap_ci

N_SIMS = 1000  # simulated data sets, each one cell of a single vectorised call


def _coverage(data: torch.Tensor, truth: float, method: str) -> float:
    ci = bootstrap_ci(data, method=method, seed=0)
    return float(((ci.low <= truth) & (truth <= ci.high)).double().mean())


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_coverage_of_the_mean_normal(method):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(30, N_SIMS, generator=g, dtype=torch.float64) * 2.0 + 1.0
    assert 0.92 <= _coverage(data, 1.0, method) <= 0.975


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_coverage_of_the_mean_skewed(method):
    # Exponential(1), n=30: bootstrap intervals under-cover a little; still near nominal.
    g = torch.Generator().manual_seed(1)
    data = torch.empty(30, N_SIMS, dtype=torch.float64).exponential_(generator=g)
    assert 0.89 <= _coverage(data, 1.0, method) <= 0.975


def test_bca_matches_scipy_and_corrects_skew():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.exponential(size=30)
    b = 20000
    ours = bootstrap_ci(torch.tensor(x), n_resamples=b, seed=1)
    pct = bootstrap_ci(torch.tensor(x), n_resamples=b, seed=1, method="percentile")
    ref = stats.bootstrap((x,), np.mean, n_resamples=b, method="BCa", rng=np.random.default_rng(1))
    ref_low, ref_high = ref.confidence_interval
    width = ref_high - ref_low
    # Different random streams, so agreement is up to Monte Carlo error (~1% of the width).
    assert abs(float(ours.low) - ref_low) < 0.04 * width
    assert abs(float(ours.high) - ref_high) < 0.04 * width
    # Right skew: BCa moves both limits up from the percentile ones, by more than the noise.
    assert float(ours.low) - float(pct.low) > 0.04 * width
    assert float(ours.high) - float(pct.high) > 0.04 * width


def test_bca_with_a_callable_statistic_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    x = rng.lognormal(size=40)
    ours = bootstrap_ci(torch.tensor(x), lambda t, dim: t.std(dim=dim), n_resamples=10000, seed=3)
    ref = stats.bootstrap(
        (x,), lambda v, axis: np.std(v, axis=axis, ddof=1), n_resamples=10000, method="BCa",
        rng=np.random.default_rng(3),
    ).confidence_interval
    width = ref.high - ref.low
    assert float(ours.estimate) == pytest.approx(np.std(x, ddof=1))
    assert abs(float(ours.low) - ref.low) < 0.05 * width
    assert abs(float(ours.high) - ref.high) < 0.05 * width


def test_bca_of_a_discrete_statistic_counts_ties_half():
    # Bootstrap medians of n=31 are data values, so many replicates tie with the estimate; the
    # bias correction must count them half (as scipy does) or z0 and both limits shift.
    stats = pytest.importorskip("scipy.stats")
    x = np.random.default_rng(5).exponential(size=31)
    ours = bootstrap_ci(torch.tensor(x), "median", n_resamples=10000, seed=1)
    ref = stats.bootstrap((x,), np.median, n_resamples=10000, method="BCa", rng=np.random.default_rng(1))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert float(ours.estimate) == np.median(x)
    assert abs(float(ours.low) - ref.confidence_interval.low) < 0.03 * width
    assert abs(float(ours.high) - ref.confidence_interval.high) < 0.03 * width


@pytest.mark.parametrize("statistic", ["mean", "median"])
@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_vectorised_equals_per_cell_loop(statistic, method):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(25, 3, 4, generator=g).exp()
    whole = bootstrap_ci(x, statistic, n_resamples=500, method=method, seed=7)
    assert whole.low.shape == whole.high.shape == whole.estimate.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            one = bootstrap_ci(x[:, i, j], statistic, n_resamples=500, method=method, seed=7)
            for field in ("estimate", "low", "high"):
                torch.testing.assert_close(getattr(one, field), getattr(whole, field)[i, j], rtol=1e-12, atol=1e-12)


def test_chunked_cells_equal_unchunked(monkeypatch):
    # A tiny memory budget forces chunking over cells and resamples; results must not change.
    import interplab.stats.bootstrap as bootstrap

    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 7, generator=g)
    full = bootstrap_ci(x, "median", n_resamples=300, seed=2)
    monkeypatch.setattr(bootstrap, "chunk_size", lambda per_item: 2)
    small = bootstrap_ci(x, "median", n_resamples=300, seed=2)
    torch.testing.assert_close(full.low, small.low)
    torch.testing.assert_close(full.high, small.high)


def test_seeding():
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(6))
    a, b = bootstrap_ci(x, seed=11), bootstrap_ci(x, seed=11)
    c = bootstrap_ci(x, seed=12)
    assert torch.equal(a.low, b.low) and torch.equal(a.high, b.high)
    assert not torch.equal(a.low, c.low)
    assert torch.equal(a.estimate, c.estimate)  # the estimate does not depend on resampling


def test_degenerate_cells_are_points_not_nan():
    x = torch.randn(15, 3, generator=torch.Generator().manual_seed(8))
    x[:, 1] = 0.1  # zero variance (0.1 is not exact in binary: sums of it round)
    for method in ("bca", "percentile"):
        for statistic in ("mean", "median"):
            ci = bootstrap_ci(x, statistic, method=method, n_resamples=200)
            assert not torch.isnan(ci.low).any() and not torch.isnan(ci.high).any()
            assert ci.low[1] == ci.high[1] == ci.estimate[1]
            assert (ci.low[[0, 2]] < ci.high[[0, 2]]).all()


def test_interval_contains_estimate_and_orders_by_confidence():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(9))
    c90 = bootstrap_ci(x, confidence=0.90, seed=1)
    c99 = bootstrap_ci(x, confidence=0.99, seed=1)
    assert isinstance(c90, CI) and c90.n == 40 and c90.method == "bca" and c90.confidence == 0.90
    assert ((c90.low <= c90.estimate) & (c90.estimate <= c90.high)).all()
    assert (c99.width > c90.width).all()
    assert c90.low.dtype == torch.float64


def test_errors_teach():
    x = torch.randn(10, 2)
    with pytest.raises(InputError, match="at least 2 are needed"):
        bootstrap_ci(torch.randn(1, 3))
    with pytest.raises(InputError, match="scalar"):
        bootstrap_ci(torch.tensor(1.0))
    with pytest.raises(InputError, match="NaN/inf"):
        bootstrap_ci(torch.tensor([1.0, float("nan"), 2.0]))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        bootstrap_ci(x, confidence=1.0)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        bootstrap_ci(x, confidence=95)
    with pytest.raises(ConfigError, match=re.escape("unknown method 'bootstrap-t'. Valid choices: 'bca', 'percentile'")):
        bootstrap_ci(x, method="bootstrap-t")
    with pytest.raises(ConfigError, match=re.escape("unknown statistic 'mode'. Valid choices: 'mean', 'median'")):
        bootstrap_ci(x, "mode")
    with pytest.raises(ConfigError, match="n_resamples must be an integer >= 2"):
        bootstrap_ci(x, n_resamples=0)
    with pytest.raises(InputError, match="must reduce dim 0"):
        bootstrap_ci(x, lambda t, dim: t.mean())
