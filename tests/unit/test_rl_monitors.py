"""The RL monitors on constructed numbers: hack rate, proxy–verifier correlation, and the
probe-AUROC drop that flags obfuscated activations."""

from __future__ import annotations

import math

import pytest
import torch

from interplab.core.errors import InputError
from interplab.rl.grpo_loss import group_advantages
from interplab.rl.monitors import hack_rate, obfuscation, probe_aurocs, proxy_verifier_correlation


def test_hack_rate_counts_proxy_success_with_verifier_failure():
    proxy = [0.9, 0.8, 0.1, 0.95, 0.7]
    verifier = [0.9, -0.5, -0.5, -0.1, 0.2]
    # proxy > 0.5: items 0, 1, 3, 4; of those verifier < 0: items 1, 3 -> 2 of 5
    assert hack_rate(proxy, verifier, 0.5, 0.0) == pytest.approx(2 / 5)
    assert hack_rate(proxy, [1.0] * 5, 0.5, 0.0) == 0.0
    assert hack_rate([0.0] * 5, [-1.0] * 5, 0.5, 0.0) == 0.0  # the proxy claims no success


def test_correlation_is_spearman_and_nan_when_undefined():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert proxy_verifier_correlation(x, [v ** 3 for v in x]) == pytest.approx(1.0)  # monotone, not linear
    assert proxy_verifier_correlation(x, [-v for v in x]) == pytest.approx(-1.0)
    assert proxy_verifier_correlation(x, [1, 3, 2, 5, 4]) == pytest.approx(0.8)  # 1 - 6*4/(5*24)
    assert math.isnan(proxy_verifier_correlation(x, [2.0] * 5))
    assert math.isnan(proxy_verifier_correlation([1.0, 2.0], [1.0, 2.0]))


def test_monitors_refuse_mismatched_or_nonfinite_input():
    with pytest.raises(InputError, match="proxy has 3 rewards, verifier 2"):
        hack_rate([1, 2, 3], [1, 2], 0, 0)
    with pytest.raises(InputError, match="verifier holds NaN"):
        proxy_verifier_correlation([1, 2, 3], [1, float("nan"), 3])
    with pytest.raises(InputError, match="No completions"):
        hack_rate([], [], 0, 0)


def test_auroc_drop_detects_obfuscation_on_synthetic_activations():
    g = torch.Generator().manual_seed(0)
    n, d = 200, 16
    labels = torch.arange(n) % 2
    concept = torch.zeros(d)
    concept[0] = 1.0
    ref_acts = torch.randn(n, d, generator=g) + 3.0 * labels[:, None] * concept  # concept along dim 0
    weight = concept  # the probe reads dim 0
    # The policy moved the concept to dim 1: the text is the same, the probe no longer sees it.
    moved = torch.zeros(d)
    moved[1] = 1.0
    pol_acts = torch.randn(n, d, generator=g) + 3.0 * labels[:, None] * moved
    out = probe_aurocs(ref_acts @ weight, pol_acts @ weight, labels)
    assert out["probe_auroc_reference"] > 0.95
    assert abs(out["probe_auroc_policy"] - 0.5) < 0.1
    assert out["probe_auroc_drop"] == pytest.approx(out["probe_auroc_reference"] - out["probe_auroc_policy"])
    assert obfuscation(out["probe_auroc_reference"], out["probe_auroc_policy"])
    same = probe_aurocs(ref_acts @ weight, ref_acts @ weight, labels)
    assert same["probe_auroc_drop"] == 0.0 and not obfuscation(same["probe_auroc_reference"],
                                                                same["probe_auroc_policy"])
    assert not obfuscation(float("nan"), 0.5)


def test_group_advantages_normalise_within_each_group():
    rewards = torch.tensor([1.0, 3.0, 10.0, 10.0, 0.0, 6.0])
    adv = group_advantages(rewards, 2)
    s = torch.tensor(2.0).sqrt()  # unbiased std of (1, 3) and of (0, 6)/3
    assert torch.allclose(adv, torch.tensor([-1 / (s + 1e-4), 1 / (s + 1e-4), 0, 0,
                                             -3 / (3 * s + 1e-4), 3 / (3 * s + 1e-4)]))
    assert torch.allclose(group_advantages(rewards, 3, scale=False),
                          rewards - rewards.view(2, 3).mean(1).repeat_interleave(3))
