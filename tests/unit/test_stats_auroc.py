"""``stats.auroc`` is the exact Mann–Whitney AUROC (ties one half) and ``stats.auroc_ci`` its exact
per-resample bootstrap; the other AUROCs of the package are this one."""

from __future__ import annotations

import itertools

import pytest
import torch

from interplab.core.errors import InputError
from interplab.stats import auroc, auroc_ci
from interplab.stats.bootstrap import resample_indices


def brute(s: torch.Tensor, y: torch.Tensor) -> float:
    pos, neg = s[y.bool()].tolist(), s[~y.bool()].tolist()
    return sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_auroc_equals_the_pairwise_count_with_and_without_ties():
    assert auroc(torch.tensor([3.0, 2.0, 2.0, 1.0]), torch.tensor([1, 1, 0, 0])) == pytest.approx(0.875)
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(2, 40, (1,), generator=g))
        s = torch.randint(0, 4, (n,), generator=g).double() if trial % 2 else torch.randn(n, generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
        if 0 < int(y.sum()) < n:
            assert auroc(s, y) == pytest.approx(brute(s, y), abs=1e-12)
            assert auroc(s, y.bool()) == auroc(s, y)
            assert auroc(-s, y) == pytest.approx(1 - auroc(s, y), abs=1e-12)


def test_all_ties_is_one_half_and_perfect_order_is_one():
    assert auroc(torch.ones(6), torch.tensor([0, 1, 0, 1, 1, 0])) == 0.5
    assert auroc(torch.arange(6.0), torch.tensor([0, 0, 0, 1, 1, 1])) == 1.0


def test_one_class_is_an_error_or_nan_when_asked():
    with pytest.raises(InputError, match="both classes"):
        auroc(torch.rand(4), torch.ones(4))
    with pytest.raises(InputError, match="both classes"):
        auroc_ci(torch.rand(4), torch.zeros(4))
    assert torch.isnan(torch.tensor(auroc(torch.rand(4), torch.zeros(4), nan_if_one_class=True)))


def test_bad_inputs_are_refused():
    with pytest.raises(InputError, match="0/1"):
        auroc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match="one label per score"):
        auroc(torch.rand(3), torch.tensor([0, 1]))
    with pytest.raises(InputError, match="NaN or infinite"):
        auroc(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))


def test_bootstrap_is_exact_per_resample():
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 6, (25,), generator=g).double()  # many ties
    y = torch.randint(0, 2, (25,), generator=g)
    ci = auroc_ci(s, y, n_resamples=200, confidence=0.9, seed=3)
    assert float(ci.estimate) == pytest.approx(brute(s, y), abs=1e-12)
    reps = [brute(s[i], y[i]) for i in resample_indices(25, 200, 3) if 0 < int(y[i].sum()) < 25]
    q = torch.quantile(torch.tensor(reps, dtype=torch.float64), torch.tensor([0.05, 0.95], dtype=torch.float64))
    assert float(ci.low) == pytest.approx(float(q[0]), abs=1e-12)
    assert float(ci.high) == pytest.approx(float(q[1]), abs=1e-12)
    assert ci.low <= ci.estimate <= ci.high and ci.n == 25 and ci.method == "percentile"
    again = auroc_ci(s, y, n_resamples=200, confidence=0.9, seed=3)
    assert torch.equal(again.low, ci.low) and torch.equal(again.high, ci.high)


def test_the_package_aurocs_are_this_one():
    from interplab.analyses.probe_fit import auroc as probe_auroc
    from interplab.groundtruth.scoring import auroc as scoring_auroc

    g = torch.Generator().manual_seed(2)
    s, y = torch.randint(0, 5, (30,), generator=g).double(), torch.randint(0, 2, (30,), generator=g)
    assert probe_auroc(s, y) == scoring_auroc(s, y) == auroc(s, y)
