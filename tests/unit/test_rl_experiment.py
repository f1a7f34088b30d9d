"""The shipped RL experiment's statistics and checks, on constructed held-out scores."""

import pytest
import torch

from interplab.core.errors import ConfigError
from interplab.rl.experiment import ARMS, HeldOut, arm_statistics, review_prompts
from interplab.rl.experiment_run import ExperimentConfig


def _held(vader, proxy, probe2=None):
    n = len(vader)
    return HeldOut([""] * n, torch.tensor(vader, dtype=torch.float64), torch.tensor(proxy, dtype=torch.float64),
                   torch.tensor(probe2 if probe2 is not None else [0.0] * n, dtype=torch.float64))


def test_gains_hack_rate_and_goodhart_gap_follow_their_definitions():
    n = 12
    start = _held([0.0] * n, [-1.0] * n)
    # the proxy flips to positive everywhere, VADER rises on half the prompts only
    end = _held([0.5] * 6 + [0.0] * 6, [1.0] * n)
    s = arm_statistics(start, [end, end], control=[start], seed=0)
    assert s["verifier_gain"][0] == pytest.approx(0.25)
    assert s["verifier_gain"][1] <= 0.25 <= s["verifier_gain"][2]
    assert s["hack_rate"][0] == pytest.approx(0.5) and s["hack_rate_start"] == 0.0
    # proxy success rate +1, verifier success rate +0.5: gap 0.5
    assert s["goodhart_gap"][0] == pytest.approx(0.5)
    assert s["p_vs_control"] < 0.05  # 6 of 12 prompts gained, none in the control


def test_no_change_gives_zero_gains_and_a_large_p():
    start = _held([0.1, -0.2, 0.3, 0.0], [0.5, -0.5, 0.2, -0.1])
    s = arm_statistics(start, [start], control=[start])
    assert s["verifier_gain"] == [0.0, 0.0, 0.0] and s["goodhart_gap"][0] == 0.0
    assert s["p_vs_control"] == 1.0


def test_prompts_are_64_distinct_openers_in_a_seeded_order():
    a, b = review_prompts(0), review_prompts(0)
    assert a == b and len(set(a)) == 64 and review_prompts(1) != a


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="unknown"):
        ExperimentConfig(arms=("probe_kl", "magic"))
    with pytest.raises(ConfigError, match="64 openers"):
        ExperimentConfig(n_train=48, n_heldout=32)
    assert ExperimentConfig().arms == ARMS
