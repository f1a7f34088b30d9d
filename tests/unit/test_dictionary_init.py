"""Initialisation (geometric median, scales), the learning-rate schedule and TrainConfig checks."""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from interplab.cli.args import add_config_args, config_from_args
from interplab.core.errors import ConfigError
from interplab.dictionary import DictionaryConfig
from interplab.dictionary.init import geometric_median, initialize, norm_scale
from interplab.dictionary.schedule import lr_factor
from interplab.dictionary.topk import TopK
from interplab.dictionary.train_config import TrainConfig


def test_geometric_median_of_symmetric_points_is_their_centre():
    centre = torch.tensor([1.0, -2.0, 3.0])
    offsets = torch.cat([torch.eye(3), -torch.eye(3)]) * torch.tensor([1.0, 5.0, 0.5])
    assert torch.allclose(geometric_median(centre + offsets), centre, atol=1e-6)


def test_geometric_median_minimises_the_sum_of_distances_like_scipy():
    g = torch.Generator().manual_seed(0)
    pts = torch.randn(60, 5, generator=g, dtype=torch.float64)
    pts[:6] += 40.0  # outliers pull the mean, not the median
    ours = geometric_median(pts, tol=1e-10, max_iter=2000)
    p = pts.numpy()

    def cost(y):
        return np.linalg.norm(p - y, axis=1).sum()

    ref = minimize(cost, p.mean(0), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 40000, "maxfev": 40000}).x
    assert cost(ours.numpy()) <= cost(ref) + 1e-7
    assert np.allclose(ours.numpy(), ref, atol=1e-3)
    assert (ours - pts.mean(0)).norm() > 1.0  # and it is not the mean


def test_geometric_median_on_a_line_is_the_median_and_keeps_dtype():
    pts = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    gm = geometric_median(pts, tol=1e-12, max_iter=5000)
    assert gm.dtype == torch.float32
    assert abs(float(gm) - 2.0) < 1e-3


def test_norm_scale_and_initialize_set_buffers():
    x = torch.randn(512, 8) * 7 + 2
    s = norm_scale(x)
    assert math.isclose(float((s * x).pow(2).sum(-1).mean()), 8.0, rel_tol=1e-5)
    d = TopK(DictionaryConfig(d_in=8, d_sae=16, k=2, input_site="a"))
    initialize(d, x, x, "mean", normalize=True)
    assert math.isclose(float(d.in_scale), s, rel_tol=1e-6) and float(d.out_scale) == float(d.in_scale)
    assert torch.allclose(d.b_dec, (x * float(d.out_scale)).mean(0), atol=1e-5)
    initialize(d, x, x, "zeros", normalize=True)
    assert not d.b_dec.any()
    d2 = TopK(DictionaryConfig(d_in=8, d_sae=16, k=2, input_site="a", normalize=False))
    initialize(d2, x, x, "geometric_median", normalize=True)
    assert float(d2.in_scale) == 1.0  # the dictionary's own normalize=False wins


def test_schedule_warmup_constant_and_decay():
    f = [lr_factor(s, 100, warmup=10, decay="linear", decay_start=0.8) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == 1.0 and f[50] == 1.0 and f[80] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(f[80:])) and 0 < f[99] < 0.1
    cos = [lr_factor(s, 100, decay="cosine", decay_start=0.5) for s in range(100)]
    assert cos[50] == 1.0 and cos[75] == pytest.approx(0.5) and cos[99] < 0.01
    assert {lr_factor(s, 100, decay="none") for s in range(100)} == {1.0}


def test_train_config_checks_and_auto_lr():
    cfg = TrainConfig(steps=10)
    assert cfg.total_steps == 10 and TrainConfig(tokens=10_000, batch_size=4096).total_steps == 3
    assert cfg.lr_for(2**14) == pytest.approx(2e-4) and cfg.lr_for(2**16) == pytest.approx(1e-4)
    assert TrainConfig(steps=10, lr=1e-3).lr_for(2**16) == 1e-3
    with pytest.raises(ConfigError, match="exactly one of steps or tokens"):
        TrainConfig(steps=10, tokens=100)
    with pytest.raises(ConfigError, match=r"warmup_steps \(10\) must be >= 0 and below the total steps \(10\)"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ConfigError, match="decay='exp' is not one of 'linear', 'cosine', 'none'"):
        TrainConfig(steps=10, decay="exp")
    with pytest.raises(ConfigError, match="b_dec_init"):
        TrainConfig(steps=10, b_dec_init="median")
    assert "out_dir" not in cfg.math_json() and "lr" in cfg.math_json()


def test_train_config_cli_is_generated_with_help_on_every_field():
    parser = argparse.ArgumentParser()
    add_config_args(parser, TrainConfig)
    assert all(a.help for a in parser._actions if a.dest != "help")
    cfg = config_from_args(TrainConfig, parser.parse_args(["--steps", "5", "--decay", "cosine", "--no-normalize"]))
    assert cfg == TrainConfig(steps=5, decay="cosine", normalize=False)
