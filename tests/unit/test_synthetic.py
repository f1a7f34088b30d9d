"""Synthetic ground truth: the statistics each config promises, determinism, refusals; and the
toy model of superposition's headline result (Elhage et al. 2022)."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import ConfigError, InputError
from interplab.groundtruth.superposition import ToyConfig, hidden_activations, train_toy_model
from interplab.groundtruth.synthetic import (
    SyntheticFeatures,
    make_features,
    planted_concept,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_directions_are_unit_rows_and_orthogonal_when_asked():
    fs = make_features(SyntheticFeatures(n_features=64, d=32))
    assert fs.directions.shape == (64, 32)
    torch.testing.assert_close(fs.directions.norm(dim=-1), torch.ones(64))
    ortho = make_features(SyntheticFeatures(n_features=8, d=16, directions="orthogonal"))
    torch.testing.assert_close(ortho.directions @ ortho.directions.T, torch.eye(8), atol=1e-6, rtol=0)


def test_sample_is_deterministic_and_equals_coefficients_times_directions():
    cfg = SyntheticFeatures(n_features=16, d=8, feature_probability=0.2, seed=3)
    a1, c1 = make_features(cfg).sample(500)
    a2, c2 = make_features(cfg).sample(500)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    torch.testing.assert_close(a1, c1 @ make_features(cfg).directions)
    other, _ = make_features(cfg).sample(500, torch.Generator().manual_seed(9))
    assert not torch.equal(other, a1)
    assert (c1 >= 0).all() and (c1 <= 1).all() and ((c1 > 0) == (c1 != 0)).all()


@pytest.mark.parametrize("correlation", ["independent", "correlated", "anticorrelated"])
def test_marginal_probability_is_kept(correlation):
    cfg = SyntheticFeatures(n_features=9, d=4, feature_probability=0.1, correlation=correlation, group_size=3)
    _, c = make_features(cfg).sample(40000)
    rate = (c > 0).float().mean(0)
    assert (rate - 0.1).abs().max() < 0.01, rate


def _indicator_corr(c, i, j):
    a, b = (c[:, i] > 0).double(), (c[:, j] > 0).double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_correlation_structures():
    _, c = make_features(SyntheticFeatures(n_features=8, d=4, feature_probability=0.2, correlation="correlated",
                                           group_size=4, group_correlation=0.6)).sample(40000)
    assert abs(_indicator_corr(c, 0, 1) - 0.6) < 0.03  # same group: exactly rho in expectation
    assert abs(_indicator_corr(c, 0, 5)) < 0.03  # different groups: independent
    _, c = make_features(SyntheticFeatures(n_features=6, d=4, feature_probability=0.2,
                                           correlation="anticorrelated")).sample(40000)
    assert not ((c[:, 0] > 0) & (c[:, 1] > 0)).any()
    assert abs(_indicator_corr(c, 0, 1) - (-0.2 / 0.8)) < 0.03
    assert abs(_indicator_corr(c, 0, 2)) < 0.03


def test_lognormal_magnitudes_and_noise():
    cfg = SyntheticFeatures(n_features=4, d=4, feature_probability=1.0, magnitude="lognormal",
                            lognormal_sigma=0.5, noise_std=0.1)
    fs = make_features(cfg)
    a, c = fs.sample(20000)
    logs = c.log()
    assert abs(float(logs.mean())) < 0.02 and abs(float(logs.std()) - 0.5) < 0.02
    assert abs(float((a - c @ fs.directions).std()) - 0.1) < 0.005


def test_config_refusals_teach():
    with pytest.raises(ConfigError, match="orthogonal directions do not fit"):
        SyntheticFeatures(n_features=10, d=4, directions="orthogonal")
    with pytest.raises(ConfigError, match="'independent', 'correlated', 'anticorrelated'"):
        SyntheticFeatures(correlation="chained")
    with pytest.raises(ConfigError, match="1 - sparsity"):
        SyntheticFeatures(feature_probability=0.0)
    with pytest.raises(ConfigError, match="<= 0.5"):
        SyntheticFeatures(correlation="anticorrelated", feature_probability=0.6)
    with pytest.raises(InputError, match="n_tokens"):
        make_features(SyntheticFeatures()).sample(0)
    with pytest.raises(ConfigError, match="n_nuisance < d"):
        planted_concept(100, 4, n_nuisance=4)


def test_planted_concept_shapes_balance_and_geometry():
    pc = planted_concept(400, 16, signal=2.0, n_nuisance=3, seed=1)
    assert pc.acts.shape == (400, 16) and pc.labels.shape == (400,) and pc.groups.shape == (400,)
    assert int(pc.labels.sum()) == 200
    assert abs(float(pc.direction.norm()) - 1) < 1e-6
    # The class means differ by ~signal along the direction (noise is orthogonal or unit).
    proj = pc.acts @ pc.direction
    gap = float(proj[pc.labels == 1].mean() - proj[pc.labels == 0].mean())
    assert abs(gap - 2.0) < 0.3
    again = planted_concept(400, 16, signal=2.0, n_nuisance=3, seed=1)
    assert torch.equal(again.acts, pc.acts) and torch.equal(again.labels, pc.labels)


def test_toy_model_superposition_headline():
    """Dense features: about d represented; sparse: more features than dimensions."""
    base = dict(n_features=12, d_hidden=4, steps=600, batch_size=512, importance_decay=0.9, lr=2e-2)
    dense = train_toy_model(ToyConfig(feature_probability=1.0, **base))
    sparse = train_toy_model(ToyConfig(feature_probability=0.05, **base))
    assert dense.n_represented <= 4 + 1  # ~d (the paper's dense regime keeps the d most important)
    assert dense.n_represented >= 3
    assert sparse.n_represented > 4  # superposition: more features than dimensions
    assert sparse.n_represented > dense.n_represented + 2
    again = train_toy_model(ToyConfig(feature_probability=0.05, **base))
    assert torch.equal(again.W, sparse.W)  # deterministic
    h, x = hidden_activations(sparse, 100)
    torch.testing.assert_close(h, x @ sparse.W.T)
    torch.testing.assert_close(sparse.directions.norm(dim=-1), torch.ones(12))
