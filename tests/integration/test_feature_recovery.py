"""Methods recover planted ground truth: a TopK SAE finds superposed sparse features (the issue's
acceptance criterion, MMCS >= 0.99) and a toy model's represented features; a random dictionary
of the same shape does not; a linear probe finds a planted concept."""

from __future__ import annotations

import logging

import pytest
import torch

from interplab.activations.source import TensorSource
from interplab.analyses.probes import ProbeConfig, fit_probe
from interplab.dictionary import DictionaryConfig
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import train
from interplab.groundtruth.scoring import feature_recovery, null_control, probe_recovery
from interplab.groundtruth.superposition import ToyConfig, hidden_activations, train_toy_model
from interplab.groundtruth.synthetic import SyntheticFeatures, make_features, planted_concept

log = logging.getLogger(__name__)


def train_topk(acts: torch.Tensor, out_dir, d_sae: int, k: int, steps: int, seed: int = 0):
    """A TopK SAE trained by our trainer. AuxK revives latents dead for 20k tokens (the default
    10M would never trigger in a run this short)."""
    dc = DictionaryConfig(arch="topk", d_in=acts.shape[1], d_sae=d_sae, k=k, input_site="x",
                          dead_after_tokens=20_000)
    cfg = TrainConfig(steps=steps, batch_size=256, lr=3e-3, init_tokens=4096, checkpoint_every=0,
                      log_every=steps, seed=seed, out_dir=str(out_dir))
    res = train(TensorSource({"x": acts}), [dc], cfg, progress=False)
    return res.dictionaries[res.names[0]]


def test_topk_sae_recovers_superposed_features(tmp_path):
    # 64 random (not orthogonal) unit directions in 32 dimensions, ~2.6 active per token.
    cfg = SyntheticFeatures(n_features=64, d=32, feature_probability=0.04, directions="random", seed=0)
    fs = make_features(cfg)
    acts, _ = fs.sample(50_000)
    sae = train_topk(acts, tmp_path / "run", d_sae=128, k=3, steps=2000)
    held_acts, held_coeffs = fs.sample(20_000, torch.Generator().manual_seed(99))
    score = feature_recovery(sae, fs.directions, held_acts, held_coeffs)
    null = null_control(sae, fs.directions, held_acts, held_coeffs, seed=0)
    log.info("synthetic: MMCS %.4f (min %.3f), Hungarian r %.4f; null MMCS %.3f, r %.3f", score.mmcs,
             float(score.cosine.per_true.min()), score.matched_correlation, null.mmcs, null.matched_correlation)
    assert score.mmcs >= 0.99  # measured 0.9990 (seeds 1-3: 0.9991-0.9992)
    assert score.cosine.recovered(0.95) == 64  # every feature found (measured min cosine 0.998)
    assert score.matched_correlation >= 0.9  # measured 0.940 (k fixed at 3 adds spurious firings)
    assert null.mmcs < 0.5  # measured 0.438
    assert null.matched_correlation < 0.6  # measured 0.416
    assert score.mmcs - null.mmcs > 0.4


def test_topk_sae_recovers_toy_model_features(tmp_path):
    toy = train_toy_model(ToyConfig(n_features=20, d_hidden=5, feature_probability=0.05, steps=1500,
                                    batch_size=512, seed=0))
    assert toy.n_represented > 5  # in superposition (measured 14)
    true = toy.directions[toy.represented]
    h, _ = hidden_activations(toy, 40_000)
    sae = train_topk(h, tmp_path / "run", d_sae=20, k=1, steps=2000)
    held_h, held_x = hidden_activations(toy, 20_000, seed=7)
    coeffs = held_x[:, toy.represented]
    score = feature_recovery(sae, true, held_h, coeffs)
    null = null_control(sae, true, held_h, coeffs, seed=0)
    log.info("toy: %d represented; MMCS %.4f, Hungarian r %.3f; null MMCS %.3f, r %.3f", toy.n_represented,
             score.mmcs, score.matched_correlation, null.mmcs, null.matched_correlation)
    assert score.mmcs >= 0.98  # measured 0.9996
    assert score.matched_correlation >= 0.8  # measured 0.884
    assert score.mmcs > null.mmcs + 0.15  # null measured 0.761: random directions in 5-d are close


@pytest.mark.parametrize("method", ["logistic", "lda"])
def test_probe_recovers_planted_concept(method):
    pc = planted_concept(4000, 32, signal=2.0, n_nuisance=4, seed=0)
    res = fit_probe(pc.acts, pc.labels, pc.groups, ProbeConfig(method=method, n_resamples=200))
    cos = probe_recovery(res.probe.direction, pc.direction)
    log.info("probe %s: |cos| %.4f, test accuracy %.3f", method, cos, res.accuracy["test"])
    assert cos >= 0.95
    # Null: the same probe on shuffled labels finds no direction in particular.
    shuffled = pc.labels[torch.randperm(4000, generator=torch.Generator().manual_seed(0))]
    null = fit_probe(pc.acts, shuffled, pc.groups, ProbeConfig(method=method, n_resamples=200, control="none"))
    assert probe_recovery(null.probe.direction, pc.direction) < 0.5
