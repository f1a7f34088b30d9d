"""The trainer: one pass trains several dictionaries, errors before work, artifacts on disk."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.activations.source import TensorSource
from interplab.core.errors import ConfigError
from interplab.dictionary import Dictionary, DictionaryConfig
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import TrainResult, train

SITE, OTHER = "L1.resid_post", "L2.resid_post"


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=1024, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(24, d, generator=g)
    codes = torch.rand(n, 24, generator=g) * (torch.rand(n, 24, generator=g) < 0.15)
    return codes @ basis + 0.5


def source():
    return TensorSource({SITE: data(), OTHER: data(seed=1)[:, :6]})


def sae(d_sae=32, k=4, site=SITE, d_in=8, **kw):
    return DictionaryConfig(arch="topk", d_in=d_in, d_sae=d_sae, k=k, input_site=site, **kw)


def cfg(tmp_path, **kw):
    base = dict(steps=30, batch_size=64, lr=3e-3, log_every=5, init_tokens=256, checkpoint_every=0,
                out_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kw})


def metrics(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_train_learns_and_saves_artifacts(tmp_path):
    res = train(source(), [sae()], cfg(tmp_path), progress=False)
    assert isinstance(res, TrainResult) and res.names == ["L1.resid_post.topk.32.k4"]
    path = res.paths[res.names[0]]
    assert path == tmp_path / "run" / "L1.resid_post.topk.32.k4"
    recs = metrics(path)
    assert [r["step"] for r in recs] == [5, 10, 15, 20, 25, 30]
    assert {"loss", "mse", "fvu", "l0", "n_dead", "lr", "tokens"} <= set(recs[-1])
    assert recs[-1]["fvu"] < 0.6 * recs[0]["fvu"] and recs[-1]["l0"] <= 4
    training = json.loads((path / "training.json").read_text())
    assert training["steps"] == 30 and training["final_metrics"] == recs[-1] == res.metrics[res.names[0]]
    assert training["train_config"]["lr"] == 3e-3
    loaded = Dictionary.load(path)
    for k, v in res.dictionaries[res.names[0]].state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # unit-norm decoder rows, and the scale makes the mean squared input norm the width
    assert torch.allclose(loaded.W_dec.norm(dim=-1), torch.ones(32), atol=1e-5)
    x = data()
    assert float((x * loaded.in_scale).pow(2).sum(-1).mean()) == pytest.approx(8.0, rel=0.05)


def test_one_pass_trains_each_dictionary_exactly_as_alone(tmp_path):
    cfgs = [sae(32, 4), sae(16, 2), sae(24, 3, site=OTHER, d_in=6)]
    together = train(source(), cfgs, cfg(tmp_path / "all", lr=0.0), progress=False)
    assert len(set(together.names)) == 3
    for dc, name in zip(cfgs, together.names):
        alone = train(source(), [dc], cfg(tmp_path / name, lr=0.0), progress=False)
        a, b = together.dictionaries[name].state_dict(), alone.dictionaries[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert metrics(together.paths[name]) == metrics(alone.paths[name])


def test_decoder_constraint_none_leaves_rows_free(tmp_path):
    res = train(source(), [sae()], cfg(tmp_path, decoder="none", b_dec_init="zeros", normalize=False),
                progress=False)
    d = res.dictionaries[res.names[0]]
    assert not torch.allclose(d.W_dec.norm(dim=-1), torch.ones(32), atol=1e-4)
    assert float(d.in_scale) == 1.0


def test_dead_latents_are_counted_and_revived_by_auxk(tmp_path):
    res = train(source(), [sae(256, 2, dead_after_tokens=128, aux_k=8)], cfg(tmp_path), progress=False)
    recs = metrics(res.paths[res.names[0]])
    assert any(r["n_dead"] > 0 for r in recs) and any("auxk" in r for r in recs)
    assert recs[-1]["n_dead"] == int(res.dictionaries[res.names[0]].dead_mask().sum())


def test_duplicate_names_get_a_config_hash(tmp_path):
    res = train(source(), [sae(), sae(aux_coeff=0.1)], cfg(tmp_path, steps=5), progress=False)
    assert len(set(res.names)) == 2 and all(n.startswith("L1.resid_post.topk.32.k4.") for n in res.names)


def test_errors_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"reads input_site='L9.resid_post'.*Available sites: 'L1.resid_post', 'L2.resid_post'"):
        train(source(), [sae(site="L9.resid_post")], cfg(tmp_path), progress=False)
    with pytest.raises(ConfigError, match=r"expects width 8 at 'L2.resid_post' but the source's activations there are 6 wide"):
        train(source(), [sae(site=OTHER)], cfg(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="at least one DictionaryConfig"):
        train(source(), [], cfg(tmp_path), progress=False)
    assert not (tmp_path / "run").exists()
    train(source(), [sae()], cfg(tmp_path, steps=2), progress=False)
    with pytest.raises(ConfigError, match="already holds a training run.*resume=True"):
        train(source(), [sae()], cfg(tmp_path, steps=2, resume=False), progress=False)
