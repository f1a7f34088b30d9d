"""Benjamini-Hochberg: a hand-worked example, the definition, monotone q-values."""

import pytest
import torch

from interplab.core.errors import ConfigError, InputError
from interplab.stats import benjamini_hochberg


def test_hand_worked_example():
    # m = 5. Sorted: 0.004 0.011 0.029 0.041 0.2; m p / i = 0.02 0.0275 0.04833 0.05125 0.2;
    # the running minimum from the right leaves them as they are. Step-up at alpha = 0.05:
    # p_(i) <= i * 0.01 holds for i = 1, 2, 3 (0.029 <= 0.03) and fails at 4 (0.041 > 0.04).
    p = torch.tensor([0.011, 0.041, 0.029, 0.004, 0.2])
    reject, q = benjamini_hochberg(p, alpha=0.05)
    assert reject.tolist() == [True, False, True, True, False]
    torch.testing.assert_close(q, torch.tensor([0.0275, 0.05125, 0.029 * 5 / 3, 0.02, 0.2], dtype=torch.float64))


def test_running_minimum():
    # Sorted 0.01, 0.04, 0.045: m p / i = 0.03, 0.06, 0.045 -> q = 0.03, 0.045, 0.045 (the
    # running minimum from the right pulls 0.06 down).
    _, q = benjamini_hochberg(torch.tensor([0.04, 0.045, 0.01]))
    torch.testing.assert_close(q, torch.tensor([0.045, 0.045, 0.03], dtype=torch.float64))
    # Sorted 0.01, 0.6, 0.7: m p / i = 0.03, 0.9, 0.7 -> q = 0.03, 0.7, 0.7.
    _, q = benjamini_hochberg(torch.tensor([0.6, 0.7, 0.01]))
    torch.testing.assert_close(q, torch.tensor([0.7, 0.7, 0.03], dtype=torch.float64))


def _reference(p: list[float], alpha: float) -> tuple[list[bool], list[float]]:
    """Straight from the definition (Benjamini & Hochberg 1995), in plain Python."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    k = max((r + 1 for r, i in enumerate(order) if p[i] <= (r + 1) * alpha / m), default=0)
    reject = [False] * m
    q = [0.0] * m
    for r, i in enumerate(order):
        reject[i] = r < k
        q[i] = min(min(1.0, m * p[j] / (s + 1)) for s, j in enumerate(order) if s >= r)
    return reject, q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_definition_on_random_sweeps(seed):
    g = torch.Generator().manual_seed(seed)
    # A sweep of 6 x 7 cells: mostly nulls, some small p-values, a few exact ties.
    p = torch.rand(6, 7, generator=g, dtype=torch.float64)
    p[:2] = p[:2] * 0.01
    p[5, :3] = p[5, 3]
    reject, q = benjamini_hochberg(p, alpha=0.1)
    ref_reject, ref_q = _reference(p.flatten().tolist(), 0.1)
    assert reject.shape == q.shape == (6, 7)
    assert reject.flatten().tolist() == ref_reject
    torch.testing.assert_close(q.flatten(), torch.tensor(ref_q, dtype=torch.float64), rtol=1e-12, atol=0)
    # q is monotone in p, never below p, and ties share their q.
    order = p.flatten().argsort()
    assert (q.flatten()[order].diff() >= 0).all()
    assert (q >= p).all()
    assert torch.equal(q[5, :4], q[5, 3].expand(4))
    assert torch.equal(reject, q <= 0.1)


def test_errors_teach():
    with pytest.raises(InputError, match=r"must lie in \[0, 1\] with no NaN"):
        benjamini_hochberg(torch.tensor([0.1, float("nan")]))
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        benjamini_hochberg(torch.tensor([0.1, 1.5]))
    with pytest.raises(ConfigError, match="alpha must be a number strictly between 0 and 1"):
        benjamini_hochberg(torch.tensor([0.1]), alpha=0)
