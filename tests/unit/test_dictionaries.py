"""Conformance: every registered dictionary architecture, tested the same way (DESIGN rule 9)."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.core.errors import ConfigError, InterplabError
from interplab.dictionary import DICTIONARIES, Dictionary, DictionaryConfig, load_dictionary

D_IN, D_SAE, K, D_OUT = 16, 64, 4, 12
NAMES = DICTIONARIES.names()


def make(name: str, **kw) -> Dictionary:
    """A tiny dictionary; transcoders (which refuse a one-site config) get two sites and d_out=12."""
    cls = DICTIONARIES.get(name)
    base = dict(arch=name, d_in=D_IN, d_sae=D_SAE, k=K, dead_after_tokens=8, **kw)
    try:
        return cls(DictionaryConfig(**base))
    except ConfigError:
        return cls(DictionaryConfig(**base, input_site="L1.resid_mid", output_site="L1.mlp_out", d_out=D_OUT))


@torch.no_grad()
def perturb(d: Dictionary, seed: int = 1) -> Dictionary:
    """Non-trivial biases, scales and arch-specific state, so every piece is exercised."""
    g = torch.Generator().manual_seed(seed)
    d.b_enc.copy_(0.1 * torch.randn(d.b_enc.shape, generator=g))
    d.b_dec.copy_(0.1 * torch.randn(d.b_dec.shape, generator=g))
    d.in_scale.fill_(0.7)
    d.out_scale.fill_(1.3)
    if hasattr(d, "log_threshold"):
        d.log_threshold.copy_(torch.log(0.05 + 0.1 * torch.rand(d.cfg.d_sae, generator=g)))
    if hasattr(d, "W_skip"):
        d.W_skip.copy_(0.1 * torch.randn(d.W_skip.shape, generator=g))
    if hasattr(d, "threshold_updates"):
        d.threshold.fill_(0.1)
    return d


def data(d: Dictionary, n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d.cfg.d_in, generator=g)
    t = torch.randn(n, d.cfg.width_out, generator=g) if d.is_transcoder else None
    return x, t


def test_every_architecture_is_registered():
    assert set(NAMES) >= {"topk", "batchtopk", "relu", "jumprelu", "matryoshka", "transcoder", "skip_transcoder"}


@pytest.mark.parametrize("name", NAMES)
def test_shapes(name):
    d = perturb(make(name))
    x, _ = data(d)
    z = d.encode(x)
    assert z.shape == (32, D_SAE)
    assert d.decode(z).shape == (32, d.cfg.width_out)
    assert d(x).shape == (32, d.cfg.width_out)
    if not hasattr(d, "W_skip"):
        torch.testing.assert_close(d(x), d.decode(z))


@pytest.mark.parametrize("name", NAMES)
def test_training_step_is_finite_and_reaches_encoder_and_decoder(name):
    d = perturb(make(name)).train()
    x, t = data(d)
    out = d.training_step(x, t)
    assert torch.isfinite(out.loss)
    assert out.latents.shape == (32, D_SAE) and out.recon.shape == (32, d.cfg.width_out)
    assert {"mse", "fvu", "l0"} <= set(out.parts)
    out.loss.backward()
    for p in (d.W_enc, d.W_dec):
        assert p.grad is not None and p.grad.abs().sum() > 0


def _equal_state(a: Dictionary, b: Dictionary) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    d = perturb(make(name)).train()
    x, t = data(d)
    out = d.training_step(x, t)
    d.update_firing(out.latents)  # non-trivial counters
    d.save(tmp_path / "d")
    for loaded in (Dictionary.load(tmp_path / "d"), type(d).load(tmp_path / "d"), load_dictionary(tmp_path / "d")):
        assert type(loaded) is type(d) and loaded.cfg == d.cfg
        _equal_state(d, loaded)
        d.eval(), loaded.eval()
        assert torch.equal(loaded(x), d(x))
        assert torch.equal(loaded.encode(x), d.encode(x))


def _train(d: Dictionary, opt, batches) -> None:
    d.train()
    for x, t in batches:
        out = d.training_step(x, t)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        d.update_firing(out.latents)


@pytest.mark.parametrize("name", NAMES)
def test_exact_resume_after_save_load(name, tmp_path):
    batches = [data(make(name), n=16, seed=s) for s in range(6)]
    ref = perturb(make(name))
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    _train(ref, opt, batches)

    first = perturb(make(name))
    opt1 = torch.optim.Adam(first.parameters(), lr=1e-2)
    _train(first, opt1, batches[:3])
    first.save(tmp_path / "ckpt")
    resumed = Dictionary.load(tmp_path / "ckpt")
    opt2 = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    opt2.load_state_dict(opt1.state_dict())  # the trainer's checkpoint carries this
    _train(resumed, opt2, batches[3:])
    _equal_state(ref, resumed)


@pytest.mark.parametrize("name", NAMES)
def test_loading_as_the_wrong_class_is_a_clear_error(name, tmp_path):
    make(name).save(tmp_path / "d")
    other = next(n for n in NAMES if n != name)
    with pytest.raises(InterplabError, match=f"holds a '{name}' dictionary, not '{other}'"):
        DICTIONARIES.get(other).load(tmp_path / "d")


def test_tampered_shapes_and_arch_are_clear_errors(tmp_path):
    make("topk").save(tmp_path / "d")
    meta = json.loads((tmp_path / "d" / "config.json").read_text())
    meta["config"]["d_sae"] = 32
    (tmp_path / "d" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InterplabError, match="weight shapes .* do not fit a 'topk' dictionary"):
        Dictionary.load(tmp_path / "d")
    meta["config"]["d_sae"] = D_SAE
    meta["arch"] = "batchtopk"  # e.g. a BatchTopK checkpoint read as something else
    (tmp_path / "d" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InterplabError, match="inconsistent: arch 'batchtopk' but config.arch 'topk'"):
        Dictionary.load(tmp_path / "d")
