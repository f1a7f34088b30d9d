"""The modular-addition transformer trained here (``groundtruth.trained_modadd``, shipped
weights): it generalises, and its embedding shows the known part of the mechanism (Nanda et al.
2023) — concentrated on a few Fourier frequencies that are necessary (removing the top three
drops it to chance) and carry most of the accuracy (keeping seven keeps most of it), unlike a
randomly initialised model of the same shape."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import ConfigError
from interplab.groundtruth.trained import Trained
from interplab.groundtruth.trained_modadd import (
    ModularAdditionConfig,
    _model,
    fourier_ablation_accuracy,
    fourier_basis,
    fourier_key_frequencies,
    modular_addition_data,
    pretrained_modular_addition,
    train_modular_addition,
)


@pytest.fixture(scope="module")
def modadd():
    return pretrained_modular_addition()


def test_shipped_model_generalises(modadd):
    assert modadd.info["p"] == 31 and modadd.info["steps"] == 3000
    assert modadd.accuracy >= 0.99  # held-out pairs (measured 1.000)
    assert modadd.info["train_accuracy"] >= 0.99


def test_embedding_is_fourier_sparse_and_the_key_frequencies_matter(modadd):
    p = modadd.info["p"]
    top = fourier_key_frequencies(modadd, 5)
    assert abs(float(top.power.sum()) - 1) < 1e-5
    assert top.fraction >= 0.85  # measured 0.918; one frequency alone holds 0.66
    assert float(top.power.max()) >= 0.5
    chance = 1 / p
    three = fourier_key_frequencies(modadd, 3).frequencies
    assert fourier_ablation_accuracy(modadd, three, keep=False) < chance + 0.05  # measured 0.036
    seven = fourier_key_frequencies(modadd, 7).frequencies
    assert fourier_ablation_accuracy(modadd, seven, keep=True) >= 0.6  # measured 0.744
    # the projections leave the weights as they were
    tokens, answers = modular_addition_data(p)
    with torch.no_grad():
        assert (modadd.model(tokens[:50]).logits[:, -1].argmax(-1) == answers[:50]).all()


def test_random_init_is_not_fourier_sparse():
    cfg = ModularAdditionConfig()
    torch.manual_seed(0)
    null = Trained(_model(cfg).eval(), None, 0.0, {"p": cfg.p})
    assert fourier_key_frequencies(null, 5).fraction < 0.5  # spread over all 16 frequencies


def test_fourier_basis_is_orthonormal():
    q = fourier_basis(31, [0, 3, 14])
    assert q.shape == (31, 5)
    torch.testing.assert_close(q.T @ q, torch.eye(5, dtype=q.dtype), atol=1e-10, rtol=0)


def test_training_is_deterministic():
    cfg = ModularAdditionConfig(steps=15)
    a = train_modular_addition(cfg, min_accuracy=0.0)
    b = train_modular_addition(cfg, min_accuracy=0.0)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name


def test_errors():
    with pytest.raises(ConfigError, match="p must be a prime >= 3, got 15"):
        ModularAdditionConfig(p=15)
    with pytest.raises(ConfigError, match="no modulus p"):
        fourier_key_frequencies(Trained(_model(ModularAdditionConfig()), None, 0.0, {}), 3)
    from interplab.groundtruth.trained import TrainingError

    with pytest.raises(TrainingError, match="held-out accuracy .* after 2 steps"):
        train_modular_addition(ModularAdditionConfig(steps=2))
