"""A model trained here on an algorithmic task (``groundtruth.trained``): induction on random
tokens reaches its accuracy bar, and its measured truth (minimal breaking sets of heads) is
confirmed by ablation and by the head detectors."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import ConfigError
from interplab.groundtruth.trained import InductionTrainConfig, train_induction_model


@pytest.fixture(scope="module")
def induction():
    return train_induction_model(InductionTrainConfig())


def test_induction_reaches_the_bar(induction):
    assert induction.accuracy >= 0.95
    assert induction.info["clean_accuracy"] >= 0.95


def test_induction_truth_matches_the_detectors(induction):
    info = induction.info
    # every head of the measured truth (minimal breaking set per layer) is flagged by the
    # detector of its role; the detector may flag one more redundant induction head
    assert info["ablation_previous_token"] and info["ablation_induction"]
    assert set(info["ablation_previous_token"]) <= set(info["detector_previous_token"])
    assert set(info["ablation_induction"]) <= set(info["detector_induction"])
    heads = set(induction.truth.heads())
    assert heads == {tuple(h) for h in info["ablation_previous_token"] + info["ablation_induction"]}
    assert any(layer == 0 for layer, _ in heads) and any(layer == 1 for layer, _ in heads)
    # K-composition edge from every previous-token head into every induction head
    for p in info["ablation_previous_token"]:
        for i in info["ablation_induction"]:
            assert (f"L{p[0]}.h{p[1]}", f"L{i[0]}.h{i[1]}", "k") in induction.truth.edges


def test_induction_ablation_breaks_only_with_the_truth(induction):
    info = induction.info
    for layer in ("L0", "L1"):
        assert info["joint_ablation"][layer] < info["break_line"]  # the truth heads carry the task
        assert info["others_ablated"][layer] > info["clean_accuracy"] - 0.1  # the rest barely matter
    # With every L1 head off nothing copies: accuracy at chance, on fresh sequences.
    from interplab.groundtruth.trained import induction_batch, masked_next_token_accuracy
    from interplab.interventions import Ablate
    from interplab.runtime import HookedModel

    cfg = InductionTrainConfig()
    tokens, mask = induction_batch(cfg, 256, torch.Generator().manual_seed(123))
    hooked = HookedModel(induction.model.eval())
    assert masked_next_token_accuracy(hooked, tokens, mask) >= 0.9
    off = [Ablate(f"L1.attn.z[h{h}]", mode="zero") for h in range(hooked.dims.n_heads)]
    assert masked_next_token_accuracy(hooked, tokens, mask, off) < info["chance"] + 0.1


def test_configs_refuse_bad_values():
    with pytest.raises(ConfigError, match="n_ctx"):
        InductionTrainConfig(n_ctx=10, max_repeat=10)
