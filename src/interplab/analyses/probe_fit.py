"""The numerical core of linear probes: group splits, three fitting methods, exact AUROC.

* Logistic regression with an L2 penalty, fitted full batch by L-BFGS in float64 on features
  standardised with training statistics, then folded back to raw coordinates (the classic
  probe of Alain & Bengio 2016).
* Difference of class means (the "mass-mean" probe of Marks & Tegmark 2023, "The Geometry of
  Truth"), thresholded at the midpoint of the projected class means.
* Linear discriminant analysis with Ledoit–Wolf shrinkage of the pooled within-class covariance
  (Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional covariance
  matrices"): direction = Σ⁻¹(μ1 − μ0), equal priors.

Every method returns ``(weight, bias)`` in raw activation coordinates with ``x·w + b > 0``
meaning label 1. AUROC is the Mann–Whitney U statistic divided by n1·n0 (ties count one half),
computed by ``stats.auroc``.
"""

from __future__ import annotations

import math
import random

import torch

from interplab.core.errors import InputError
from interplab.stats.auroc import auroc as stats_auroc
from interplab.stats.auroc import auroc_ci as stats_auroc_ci
from interplab.stats.bootstrap import CI

SPLITS = ("train", "val", "test")


def split_groups(groups: torch.Tensor, fractions: tuple[float, float, float], seed: int,
                 ) -> dict[str, torch.Tensor]:
    """Item indices per split; every group lies wholly in one split (no leakage).

    Groups are shuffled with ``seed`` and dealt out by count: ``round(G·f)`` groups to test and
    to val (at least one each when its fraction is > 0), the rest to train.
    """
    uniq = sorted(set(groups.tolist()))
    need = sum(1 for f in fractions if f > 0)
    if len(uniq) < need:
        raise InputError(
            f"Too few groups to split: {len(uniq)} group(s), but the splits "
            f"{dict(zip(SPLITS, fractions, strict=True))} need at least {need} (one per "
            "non-empty split, since a group never spans two splits). Add items from more "
            "groups, or set the val fraction to 0."
        )
    random.Random(seed).shuffle(uniq)
    g = len(uniq)
    n_test = max(1, round(g * fractions[2])) if fractions[2] > 0 else 0
    n_val = max(1, round(g * fractions[1])) if fractions[1] > 0 else 0
    while n_test + n_val > g - 1:  # train keeps at least one group
        if n_val > 1 or (n_val == 1 and n_test <= 1):
            n_val -= 1
        else:
            n_test -= 1
    parts = {"test": uniq[:n_test], "val": uniq[n_test : n_test + n_val],
             "train": uniq[n_test + n_val :]}
    out = {}
    for name in SPLITS:
        member = torch.isin(groups, torch.tensor(parts[name], dtype=groups.dtype))
        out[name] = member.nonzero().flatten()
    return out


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int = 500,
                 ) -> tuple[torch.Tensor, float]:
    """Minimise mean log-loss + (l2 / 2)·‖w‖² over standardised features (bias unpenalised).

    ``l2`` is the penalty on the *mean* loss of standardised features, so it corresponds to
    scikit-learn's ``C = 1 / (l2 · n_train)`` on ``StandardScaler``-ed inputs.
    """
    x = x.double()
    y = y.double()
    mu = x.mean(0)
    sd = x.std(0, unbiased=False)
    sd = torch.where(sd > 1e-12 * sd.max().clamp(min=1e-300), sd, torch.ones_like(sd))
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    p1 = y.mean().clamp(1e-6, 1 - 1e-6)
    b = torch.tensor(math.log(p1 / (1 - p1)), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = z @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w = w.detach() / sd
    return w, float(b.detach() - (w * mu).sum())


def fit_diff_means(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    x = x.double()
    m1, m0 = x[y == 1].mean(0), x[y == 0].mean(0)
    w = m1 - m0
    w = w / w.norm().clamp(min=1e-300)
    return w, float(-(w @ (m1 + m0)) / 2)


def ledoit_wolf(xc: torch.Tensor) -> torch.Tensor:
    """Ledoit–Wolf shrinkage of the covariance of already-centred rows ``xc [n, d]``."""
    n, d = xc.shape
    s = xc.T @ xc / n
    m = torch.trace(s) / d
    d2 = ((s - m * torch.eye(d, dtype=s.dtype)) ** 2).sum()
    # (1/n²) Σ_k ‖x_k x_kᵀ − S‖²_F, with ‖x xᵀ − S‖² = ‖x‖⁴ − 2 xᵀSx + ‖S‖².
    sq = (xc * xc).sum(1)
    b2 = ((sq**2).sum() - 2 * ((xc @ s) * xc).sum() + n * (s * s).sum()) / n**2
    shrink = (torch.minimum(b2, d2) / d2).clamp(0, 1) if d2 > 0 else torch.tensor(1.0)
    return shrink * m * torch.eye(d, dtype=s.dtype) + (1 - shrink) * s


def fit_lda(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
    x = x.double()
    m1, m0 = x[y == 1].mean(0), x[y == 0].mean(0)
    xc = torch.where((y == 1)[:, None], x - m1, x - m0)
    cov = ledoit_wolf(xc)
    eps = 1e-10 * torch.trace(cov) / cov.shape[0] + 1e-300
    w = torch.linalg.solve(cov + eps * torch.eye(cov.shape[0], dtype=cov.dtype), m1 - m0)
    return w, float(-(w @ (m1 + m0)) / 2)


FITTERS = {"logistic": fit_logistic, "diff_means": fit_diff_means, "lda": fit_lda}


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact AUROC (``stats.auroc``); ``nan`` when a class is absent (e.g. a tiny split)."""
    return stats_auroc(scores, labels, nan_if_one_class=True)


def auroc_ci(scores: torch.Tensor, labels: torch.Tensor, n_resamples: int, confidence: float,
             seed: int) -> CI:
    """Percentile bootstrap CI of AUROC over items, exact for every resample
    (``stats.auroc_ci``); all ``nan`` when a class is absent."""
    y = torch.as_tensor(labels).flatten().bool()
    if int(y.sum()) in (0, y.numel()):
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        return CI(nan, nan, nan, confidence, "percentile", y.numel())
    return stats_auroc_ci(scores, labels, n_resamples, confidence, seed)
