"""Probes recover a planted linear feature, are not fooled when there is none, and teach."""

from __future__ import annotations

import itertools

import pytest
import torch

from interplab.analyses.probe_fit import auroc, auroc_ci, split_groups
from interplab.analyses.probes import Probe, ProbeConfig, fit_probe
from interplab.core.errors import ConfigError, InputError


def planted(n, d=64, s=4.0, seed=0, feature=True):
    """x = noise + label·s·u (+ three high-variance nuisance directions orthogonal to u);
    consecutive items form a group (a pair of one positive and one negative)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u /= u.norm()
    y = torch.arange(n) % 2
    nu = torch.randn(d, 3, generator=g)
    nu -= u[:, None] * (u @ nu)
    nu /= nu.norm(dim=0)
    x = torch.randn(n, d, generator=g) + (3.0 * torch.randn(n, 3, generator=g)) @ nu.T + 10.0
    if feature:
        x += s * y[:, None] * u
    else:
        y = torch.randint(0, 2, (n,), generator=g)
    return x.float(), y, torch.arange(n) // 2, u


@pytest.fixture(scope="module")
def data():
    return planted(3000)


@pytest.mark.parametrize("method", ["logistic", "diff_means", "lda"])
def test_every_method_recovers_the_planted_direction(data, method):
    x, y, groups, u = data
    r = fit_probe(x, y, groups, ProbeConfig(method=method, n_resamples=200))
    assert float(r.probe.direction.double() @ u.double()) >= 0.95
    assert abs(float(r.probe.direction.norm()) - 1) < 1e-5
    assert float(r.test_accuracy.estimate) >= 0.93 and r.auroc["test"] >= 0.98
    assert r.test_accuracy.low <= r.test_accuracy.estimate <= r.test_accuracy.high
    # Test groups are unseen, so the random-group-label control is at chance: high selectivity.
    assert abs(r.control_accuracy - 0.5) < 0.06
    assert float(r.selectivity.low) > 0.35
    assert r.n == {"train": 1800, "val": 600, "test": 600}


@pytest.mark.parametrize("method", ["logistic", "diff_means", "lda"])
def test_no_feature_gives_chance_and_zero_selectivity(method):
    x, y, groups, _ = planted(600, feature=False, seed=1)
    r = fit_probe(x, y, groups, ProbeConfig(method=method, n_resamples=500))
    assert abs(float(r.test_accuracy.estimate) - 0.5) < 0.1
    assert float(r.selectivity.low) <= 0 <= float(r.selectivity.high)


def test_a_memorising_probe_is_caught_by_the_control():
    # Each group has its own random offset and its label is a function of the group only:
    # the probe fits the training groups, and the control (random group labels) fits them too.
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(400) // 10
    centres = torch.randn(40, 64, generator=g) * 3
    x = centres[groups] + 0.1 * torch.randn(400, 64, generator=g)
    y = torch.randint(0, 2, (40,), generator=g)[groups]
    r = fit_probe(x, y, groups, ProbeConfig(n_resamples=200, l2=1e-4))
    assert r.accuracy["train"] == 1.0 and r.control_train_accuracy == 1.0


def test_auroc_equals_brute_force_pairs():
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 6, (41,), generator=g).double()  # many ties
    y = torch.randint(0, 2, (41,), generator=g)
    pos, neg = s[y == 1].tolist(), s[y == 0].tolist()
    brute = sum((a > b) + 0.5 * (a == b) for a, b in itertools.product(pos, neg))
    assert auroc(s, y) == pytest.approx(brute / (len(pos) * len(neg)), abs=1e-12)
    ci = auroc_ci(s, y, 300, 0.95, 0)
    assert float(ci.estimate) == pytest.approx(auroc(s, y)) and ci.low <= ci.estimate <= ci.high
    assert torch.isnan(torch.tensor(auroc(s, torch.ones(41))))


def test_splits_never_share_a_group():
    groups = torch.tensor([i // 3 for i in range(90)])
    parts = split_groups(groups, (0.6, 0.2, 0.2), seed=5)
    seen = [set(groups[parts[k]].tolist()) for k in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(p) for p in parts.values()) == 90
    assert len(seen[2]) == 6 and len(seen[1]) == 6


def test_save_load_round_trip_gives_identical_scores(tmp_path, data):
    x, y, groups, _ = data
    r = fit_probe(x[:400], y[:400], groups[:400], ProbeConfig(site="L1.resid_post",
                                                              n_resamples=50))
    r.probe.save(tmp_path / "p")
    assert {f.name for f in (tmp_path / "p").iterdir()} == {"config.json", "probe.safetensors",
                                                           "provenance.json"}
    back = Probe.load(tmp_path / "p")
    assert torch.equal(back.score(x), r.probe.score(x))
    assert back.site == "L1.resid_post" and back.method == "logistic"
    assert torch.equal(back.predict(x), r.probe.predict(x))
    with pytest.raises(FileExistsError):
        r.probe.save(tmp_path / "p")
    with pytest.raises(InputError, match=r"is not a saved probe: missing config\.json, "
                                         r"probe\.safetensors"):
        Probe.load(tmp_path / "nothing")


def test_errors_teach(data):
    x, y, groups, _ = data
    cfg = ProbeConfig(n_resamples=50)
    with pytest.raises(InputError, match=r"Labels of one class only: all 10 rows are 1; a probe "
                                         r"needs two classes\.$"):
        fit_probe(x[:10], torch.ones(10), None, cfg)
    with pytest.raises(InputError, match=r"acts has 10 rows but labels has 9; give one label per "
                                         r"activation row"):
        fit_probe(x[:10], y[:9], None, cfg)
    with pytest.raises(InputError, match=r"Too few groups to split: 2 group\(s\), but the splits "
                                         r".* need at least 3"):
        fit_probe(x[:4], y[:4], groups[:4], cfg)
    # Two groups per class, but the test split ends up with one class.
    yy = torch.tensor([1, 1, 0, 0, 1, 1, 0, 0, 1, 1])
    with pytest.raises(InputError, match=r"Labels of one class only in the (test|val|train) split: "
                                         r"all \d+ rows are [01]; a probe needs two classes\. "
                                         r"Add data .* or change the seed\."):
        fit_probe(x[:10], yy, torch.arange(10) // 2, cfg)
    with pytest.raises(InputError, match=r"Labels must be 0 or 1; found \[2\]"):
        fit_probe(x[:3], torch.tensor([0, 1, 2]), None, cfg)
    with pytest.raises(InputError, match=r"The probe expects activations \[n, 64\]; got \(3, 5\)"):
        fit_probe(x[:200], y[:200], None, cfg).probe.score(torch.zeros(3, 5))


def test_config_errors_teach():
    with pytest.raises(ConfigError, match=r"Unknown probe method 'svm'\. Choose one of "
                                          r"'logistic', 'diff_means', 'lda'"):
        ProbeConfig(method="svm")
    with pytest.raises(ConfigError, match=r"Unknown reduction 'max'\. Choose one of 'last', "
                                          r"'mean'"):
        ProbeConfig(reduction="max")
    with pytest.raises(ConfigError, match=r"must be three fractions \(train, val, test\) that "
                                          r"sum to 1"):
        ProbeConfig(splits=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match=r"Unknown control 'shuffle'\. Choose one of "
                                          r"'random_labels', 'none'"):
        ProbeConfig(control="shuffle")
    assert ProbeConfig(splits=[0.8, 0.0, 0.2]).splits == (0.8, 0.0, 0.2)
