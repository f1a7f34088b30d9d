"""Cohen's d_z and Hedges' g_z: definitions, vectorisation, degenerate cells."""

import math

import pytest
import torch

from interplab.core.errors import InputError
from interplab.stats import cohens_d, hedges_g
from interplab.stats.effect_size import hedges_correction


def test_hand_computed_paired_d():
    a = torch.tensor([3.0, 5.0, 7.0, 9.0])
    b = torch.tensor([2.0, 2.0, 4.0, 4.0])
    # differences 1, 3, 3, 5: mean 3, sd sqrt(8/3)
    assert float(cohens_d(a, b)) == pytest.approx(3 / math.sqrt(8 / 3))
    assert float(cohens_d(a - b)) == float(cohens_d(a, b))


def test_hedges_correction_exact_and_approximate():
    # J(v) = Gamma(v/2) / (sqrt(v/2) Gamma((v-1)/2)); by hand J(2) = Gamma(1) / (1 * Gamma(1/2)) = 1/sqrt(pi).
    assert hedges_correction(2) == pytest.approx(1 / math.sqrt(math.pi))
    for v in (5, 10, 29, 100):
        assert hedges_correction(v) == pytest.approx(1 - 3 / (4 * v - 1), rel=2e-3)
        assert hedges_correction(v) < 1
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)) + 0.5
    torch.testing.assert_close(hedges_g(x), cohens_d(x) * hedges_correction(11))


def test_unbiased_under_normality():
    # Many small samples with true d_z = 0.5: g's average lands on it, d's overshoots.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 20000, generator=g, dtype=torch.float64) + 0.5
    assert float(hedges_g(x).mean()) == pytest.approx(0.5, abs=0.02)
    assert float(cohens_d(x).mean()) > 0.55


def test_vectorised_equals_per_cell_loop_and_degenerate_cells():
    x = torch.randn(10, 2, 3, generator=torch.Generator().manual_seed(2))
    x[:, 0, 0] = 0.0
    x[:, 1, 2] = -0.1
    d = cohens_d(x)
    assert d[0, 0] == 0 and d[1, 2] == -math.inf
    for i in range(2):
        for j in range(3):
            assert float(cohens_d(x[:, i, j])) == pytest.approx(float(d[i, j]), rel=1e-12)
            assert float(hedges_g(x[:, i, j])) == pytest.approx(float(hedges_g(x)[i, j]), rel=1e-12)


def test_errors_teach():
    with pytest.raises(InputError, match="same shape"):
        cohens_d(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(InputError, match="at least 2 are needed"):
        hedges_g(torch.randn(1, 2))
