"""Sign-flip permutation test: exact values, null uniformity, power, vectorisation, seeding."""

import itertools
import re

import pytest
import torch

from interplab.core.errors import ConfigError, InputError
from interplab.stats import paired_permutation_test


def test_exact_enumeration_hand_computed():
    # d = [1, 2, 3]: the 8 sign flips give sums 6, 4, 2, 0, 0, -2, -4, -6; observed 6.
    d = torch.tensor([1.0, 2.0, 3.0])
    assert float(paired_permutation_test(d, alternative="greater")) == 1 / 8
    assert float(paired_permutation_test(d, alternative="two-sided")) == 2 / 8
    assert float(paired_permutation_test(d, alternative="less")) == 1.0
    # d = [1, -2, 3]: observed 2; sums >= 2: {6, 4, 2}; |sums| >= 2: all but the two zeros.
    d = torch.tensor([1.0, -2.0, 3.0])
    assert float(paired_permutation_test(d, alternative="greater")) == 3 / 8
    assert float(paired_permutation_test(d, alternative="two-sided")) == 6 / 8
    assert float(paired_permutation_test(d, alternative="less")) == 6 / 8


def test_exact_matches_brute_force_and_ignores_seed():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(9, generator=g), torch.randn(9, generator=g)
    d = (a - b).double()
    obs = float(d.sum())
    sums = [sum(s * v for s, v in zip(signs, d.tolist())) for signs in itertools.product((1, -1), repeat=9)]
    expected = sum(abs(t) >= abs(obs) - 1e-12 for t in sums) / 2**9
    for seed in (0, 1):
        assert float(paired_permutation_test(a, b, seed=seed)) == pytest.approx(expected, abs=1e-15)


def test_ties_with_rounding_still_count():
    # d = (3, 1, 2, -3) / 10, observed sum 3/10. In exact arithmetic 6 of the 16 sign flips give
    # a sum >= 3/10 (by hand: 1 with s1=s4=+, 4 with s1=+, s4=-, 1 with s1=s4=-), but in
    # floating point 0.3 + 0.1 + 0.2 - 0.3 and -0.3 + 0.1 + 0.2 + 0.3 round differently, so
    # only a tie tolerance counts them as equal.
    d = torch.tensor([0.3, 0.1, 0.2, -0.3], dtype=torch.float64)
    assert float(paired_permutation_test(d, alternative="greater")) == 6 / 16
    assert float(paired_permutation_test(d, alternative="two-sided")) == 12 / 16
    assert float(paired_permutation_test(-d, alternative="less")) == 6 / 16


@pytest.mark.parametrize("n, n_permutations", [(20, 2000), (10, 10000)])  # Monte Carlo, exact
def test_null_p_values_are_uniform(n, n_permutations):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(n, 500, generator=g)
    b = torch.randn(n, 500, generator=g)
    p = paired_permutation_test(a, b, n_permutations=n_permutations, seed=3)
    assert 0.02 <= float((p < 0.05).double().mean()) <= 0.08
    assert 0.4 <= float(p.mean()) <= 0.6
    assert (p > 0).all() and (p <= 1).all()


def test_strong_effect_is_detected_and_monte_carlo_p_is_never_zero():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(40, 6, generator=g) + 2.0
    p = paired_permutation_test(a, n_permutations=5000)
    assert (p < 0.01).all()
    assert torch.allclose(p, torch.full_like(p, 1 / 5001))  # (0 + 1) / (5000 + 1)
    assert (paired_permutation_test(a, alternative="less", n_permutations=5000) > 0.99).all()


def test_vectorised_equals_per_cell_loop_and_seeding():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(30, 4, 3, generator=g), torch.randn(30, 4, 3, generator=g)
    whole = paired_permutation_test(a, b, n_permutations=999, seed=5)
    assert whole.shape == (4, 3)
    for i in range(4):
        for j in range(3):
            assert float(paired_permutation_test(a[:, i, j], b[:, i, j], n_permutations=999, seed=5)) == float(whole[i, j])
    assert torch.equal(whole, paired_permutation_test(a, b, n_permutations=999, seed=5))
    assert not torch.equal(whole, paired_permutation_test(a, b, n_permutations=999, seed=6))


def test_zero_differences_give_p_one():
    a = torch.randn(12, 2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(paired_permutation_test(a, a.clone()), torch.ones(2, dtype=torch.float64))


def test_errors_teach():
    with pytest.raises(InputError, match=r"same shape; got \(5, 2\) and \(5, 3\)"):
        paired_permutation_test(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(InputError, match="at least 2 are needed"):
        paired_permutation_test(torch.randn(1))
    with pytest.raises(ConfigError, match=re.escape("unknown alternative 'bigger'. Valid choices: 'two-sided', 'greater', 'less'")):
        paired_permutation_test(torch.randn(5), alternative="bigger")
    with pytest.raises(ConfigError, match="seed must be an integer"):
        paired_permutation_test(torch.randn(30), seed=1.5)
