"""summarize: one call gives a consistent mean, CI, p, q and effect size per cell."""

import pytest
import torch

from interplab.core.errors import InputError
from interplab.stats import (
    EffectSummary,
    benjamini_hochberg,
    bootstrap_ci,
    hedges_g,
    paired_permutation_test,
    summarize,
)


def test_summary_agrees_with_its_parts_and_finds_the_planted_cells():
    g = torch.Generator().manual_seed(0)
    effects = torch.randn(40, 4, 5, generator=g)
    effects[:, 1, 2] += 1.5  # a real effect at one cell of a 4 x 5 sweep
    effects[:, 3, 0] -= 1.5
    s = summarize(effects, seed=3, n_resamples=500, n_permutations=2000)
    assert isinstance(s, EffectSummary) and s.n == 40 and s.mean.shape == (4, 5)
    ci = bootstrap_ci(effects, n_resamples=500, seed=3)
    p = paired_permutation_test(effects, n_permutations=2000, seed=3)
    torch.testing.assert_close(s.mean, effects.double().mean(0))
    assert torch.equal(s.low, ci.low) and torch.equal(s.high, ci.high)
    assert torch.equal(s.p, p)
    assert torch.equal(s.q, benjamini_hochberg(p)[1])
    torch.testing.assert_close(s.effect_size, hedges_g(effects))
    assert s.significant[1, 2] and s.significant[3, 0]
    assert int(s.significant.sum()) == 2
    assert s.ci.low is s.low and s.ci.n == 40


def test_summary_is_deterministic():
    x = torch.randn(20, 3, generator=torch.Generator().manual_seed(1))
    a, b = summarize(x, seed=5, n_permutations=999), summarize(x, seed=5, n_permutations=999)
    for field in ("low", "high", "p", "q"):
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_summary_refuses_too_few_samples():
    with pytest.raises(InputError, match="at least 2 are needed"):
        summarize(torch.randn(1, 3))
