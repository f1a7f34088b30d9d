"""Paired permutation (sign-flip) test, vectorised over cells.

Under the null hypothesis that each paired difference ``d_i = a_i - b_i`` is symmetric about
zero, flipping the sign of any subset of the ``d_i`` leaves their joint distribution unchanged
(Fisher 1935, *The Design of Experiments*, sec. 21; Good 2005, *Permutation, Parametric and
Bootstrap Tests of Hypotheses*). The statistic is ``T = sum_i d_i`` (equivalently the
mean); its null distribution is that of ``sum_i s_i d_i`` over random signs ``s_i = +-1``.

* When ``2**n <= n_permutations`` all ``2**n`` sign vectors are enumerated and the p-value is
  exact: the share of sign vectors whose statistic is at least as extreme as the observed one
  (the observed assignment is one of them, so p >= 2**-n).
* Otherwise ``n_permutations`` random sign vectors are drawn and ``p = (b + 1) / (m + 1)``,
  ``b`` the number at least as extreme: the Monte Carlo p-value that stays valid (never below
  its nominal level) because it counts the observed data as one permutation (Phipson & Smyth
  2010, "Permutation p-values should never be zero", SAGAT 9:39).

The sign vectors are shared by all cells, like the bootstrap's rows. Assumptions: pairs are
independent, differences symmetric under the null (weaker than normality).
"""

from __future__ import annotations

import torch

from interplab.stats._shapes import Cells, Samples
from interplab.stats._validate import check_choice, check_count, chunk_size, generator, paired_difference

ALTERNATIVES = ("two-sided", "greater", "less")


def sign_vectors(n: int, n_permutations: int, seed: int) -> tuple[torch.Tensor, bool]:
    """``([m, n] int8 signs in {-1, +1}, exact)``: all ``2**n`` vectors when that many fit."""
    if n < 63 and 2**n <= n_permutations:
        bits = (torch.arange(2**n).view(-1, 1) >> torch.arange(n).view(1, -1)) & 1
        return (1 - 2 * bits).to(torch.int8), True
    bits = torch.randint(0, 2, (n_permutations, n), generator=generator(seed), dtype=torch.int8)
    return 1 - 2 * bits, False


def paired_permutation_test(
    a: Samples,
    b: Samples | None = None,
    n_permutations: int = 10000,
    seed: int = 0,
    alternative: str = "two-sided",
) -> Cells:
    """p-values per cell for the mean of ``a - b`` (or of ``a`` when ``b`` is None) being 0.

    Args:
        a, b: paired samples, pairs along dim 0 (``[n_prompts, *cells]``); row i of ``a`` and
            ``b`` is the same unit (e.g. the same prompt, clean vs patched).
        n_permutations: random sign vectors to draw; when ``2**n`` is no larger, the test
            enumerates all of them instead and is exact (and ignores the seed).
        seed: seeds the sign draws.
        alternative: 'two-sided' (|T| at least |T_obs|), 'greater' (mean difference > 0:
            T >= T_obs) or 'less' (T <= T_obs).

    Returns float64 p-values of the cells' shape. Cells whose differences are all zero get 1.
    """
    d = paired_difference(a, b)
    check_count(n_permutations, "n_permutations", 1)
    check_choice(alternative, "alternative", ALTERNATIVES)
    n, cells = d.shape[0], d.shape[1:]
    d = d.reshape(n, -1)
    signs, exact = sign_vectors(n, n_permutations, seed)
    m = signs.shape[0]
    observed = d.sum(0)
    # Sums that are equal in exact arithmetic can differ by rounding (the identity flip, or
    # flips of zero differences); treat values within the worst-case summation error as ties
    # so they count as "at least as extreme" (conservative, as in scipy.stats.permutation_test).
    tol = 4 * n * torch.finfo(torch.float64).eps * d.abs().sum(0)
    if alternative == "two-sided":
        target = observed.abs() - tol
    elif alternative == "greater":
        target = observed - tol
    else:
        target = -(observed + tol)  # T <= T_obs  <=>  -T >= -T_obs
    count = torch.zeros_like(observed)
    step = chunk_size(max(n, d.shape[1]))
    for s in range(0, m, step):
        null = signs[s : s + step].to(device=d.device, dtype=torch.float64) @ d
        if alternative == "two-sided":
            null = null.abs()
        elif alternative == "less":
            null = -null
        count += (null >= target).sum(0)
    p = count / m if exact else (count + 1) / (m + 1)
    return p.clamp(max=1.0).reshape(cells)


def smallest_p(n: int, n_permutations: int = 10000, alternative: str = "two-sided") -> float:
    """The smallest p-value ``paired_permutation_test`` can return for ``n`` samples: with all
    ``2**n`` sign vectors enumerated, 2 / 2**n two-sided (the identity and the full flip are
    equally extreme) or 1 / 2**n one-sided; with random draws, 1 / (n_permutations + 1)."""
    check_count(n, "n", 1)
    check_choice(alternative, "alternative", ALTERNATIVES)
    if n < 63 and 2**n <= n_permutations:
        return (2.0 if alternative == "two-sided" else 1.0) / 2**n
    return 1.0 / (n_permutations + 1)
