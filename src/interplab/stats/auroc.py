"""Exact AUROC and its percentile bootstrap CI, the one implementation every caller shares
(probes, the ground-truth scoring, circuits scored against a known truth).

AUROC is the Mann–Whitney U statistic of the label-1 scores divided by n1·n0: the share of
(positive, negative) pairs the scores order correctly, ties counting one half (Mann & Whitney
1947; Hanley & McNeil 1982). It is computed from average ranks in O(n log n).

The bootstrap resamples items with replacement and recomputes the AUROC exactly for every
resample: a resample weights item i by its count c_i, so its AUROC is
Σ c_i c_j K_ij / (Σc_i Σc_j) over label-1 items i and label-0 items j, with
K_ij = [s_i > s_j] + ½[s_i = s_j]. The sum over j is read off cumulative counts of the sorted
negatives, so no n1 × n0 matrix is built. Resamples that miss a class are dropped.
"""

from __future__ import annotations

import torch

from interplab.core.errors import InputError
from interplab.stats._validate import check_confidence, check_count, chunk_size
from interplab.stats.bootstrap import CI, resample_indices


def _check(scores, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 scores, bool labels), flattened, one label per finite score."""
    s = torch.as_tensor(scores).detach().cpu().flatten()
    y = torch.as_tensor(labels).detach().cpu().flatten()
    if s.shape != y.shape:
        raise InputError(f"scores has {s.numel()} entries, labels {y.numel()}; give one label per score.")
    if y.dtype != torch.bool:
        bad = y[(y != 0) & (y != 1)]
        if bad.numel():
            raise InputError(f"labels must be 0/1 (or bool); found {sorted(set(bad.tolist()))[:5]}.")
    s = s.double()
    if not bool(torch.isfinite(s).all()):
        raise InputError("scores contains NaN or infinite values; AUROC needs finite scores.")
    return s, y.bool()


def _one_class(y: torch.Tensor) -> bool:
    n1 = int(y.sum())
    return n1 == 0 or n1 == y.numel()


def _need_both(y: torch.Tensor) -> None:
    if _one_class(y):
        raise InputError(f"AUROC needs both classes; all {y.numel()} labels are "
                         f"{int(y[0]) if y.numel() else None}.")


def _auroc(s: torch.Tensor, y: torch.Tensor) -> float:
    n1 = int(y.sum())
    n0 = y.numel() - n1
    order = s.argsort()
    # Tied scores share the average of the ranks they span.
    _, inverse, counts = torch.unique_consecutive(s[order], return_inverse=True, return_counts=True)
    avg = counts.cumsum(0).double() - (counts.double() - 1) / 2
    ranks = torch.empty_like(s)
    ranks[order] = avg[inverse]
    u = ranks[y].sum() - n1 * (n1 + 1) / 2
    return float(u / (n1 * n0))


def auroc(scores, labels, *, nan_if_one_class: bool = False) -> float:
    """Exact AUROC of ``scores`` for separating label-1 items from label-0 items.

    ``labels`` are 0/1 or bool, one per score. With a single class present the AUROC is
    undefined: an ``InputError``, or ``nan`` when ``nan_if_one_class``.
    """
    s, y = _check(scores, labels)
    if _one_class(y):
        if nan_if_one_class:
            return float("nan")
        _need_both(y)
    return _auroc(s, y)


def auroc_ci(scores, labels, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> CI:
    """Percentile bootstrap CI of the AUROC over items, exact for every resample."""
    check_count(n_resamples, "n_resamples")
    check_confidence(confidence)
    s, y = _check(scores, labels)
    _need_both(y)
    est = _auroc(s, y)
    n = s.numel()
    s1, s0 = s[y], s[~y]
    order0 = s0.argsort()
    sorted0 = s0[order0]
    below = torch.searchsorted(sorted0, s1, right=False)  # negatives scored < s1_i
    upto = torch.searchsorted(sorted0, s1, right=True)  # negatives scored <= s1_i
    reps = []
    for idx in resample_indices(n, n_resamples, seed).split(chunk_size(4 * n)):
        counts = torch.zeros(idx.shape[0], n, dtype=torch.float64)
        counts.scatter_add_(1, idx, torch.ones_like(counts))
        c1, c0 = counts[:, y], counts[:, ~y][:, order0]
        cum = torch.nn.functional.pad(c0.cumsum(1), (1, 0))  # cum[:, k]: weight of the k lowest negatives
        num = (c1 * (cum[:, below] + cum[:, upto]) / 2).sum(1)
        den = c1.sum(1) * c0.sum(1)
        reps.append((num / den)[den > 0])
    reps_t = torch.cat(reps)
    alpha = (1 - confidence) / 2
    q = torch.quantile(reps_t, torch.tensor([alpha, 1 - alpha], dtype=torch.float64))
    return CI(torch.tensor(est, dtype=torch.float64), q[0], q[1], confidence, "percentile", n)
