"""SAELens export/import and sparsify import: outputs equal the other library's formulas, by hand."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from interplab.core.errors import InterplabError
from interplab.dictionary import DICTIONARIES, DictionaryConfig, export_saelens, load_dictionary


def build(name: str, **kw):
    kw = {"d_in": 16, "d_sae": 64, "k": 4, **kw}
    d = DICTIONARIES.get(name)(DictionaryConfig(arch=name, **kw))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        d.W_enc.add_(0.1 * torch.randn(d.W_enc.shape, generator=g))
        d.b_enc.copy_(0.1 * torch.randn(d.b_enc.shape, generator=g))
        d.b_dec.copy_(0.3 * torch.randn(d.b_dec.shape, generator=g))
        d.in_scale.fill_(0.6)
        d.out_scale.fill_(0.6 if not d.is_transcoder else 2.0)
        if hasattr(d, "log_threshold"):
            d.log_threshold.copy_(torch.log(0.05 + 0.2 * torch.rand(d.cfg.d_sae, generator=g)))
        if hasattr(d, "threshold_updates"):
            d.threshold.fill_(0.15)
    return d.eval()


def saelens_forward(cfg: dict, w: dict, x: torch.Tensor) -> torch.Tensor:
    """SAELens 6.x inference (StandardSAE / TopKSAE / JumpReLUSAE / Transcoder), written out."""
    sae_in = x - w["b_dec"] if cfg["apply_b_dec_to_input"] else x
    hidden = sae_in @ w["W_enc"] + w["b_enc"]
    arch = cfg["architecture"]
    if arch in ("standard", "transcoder"):
        z = hidden.relu()
    elif arch == "topk":
        v, i = hidden.topk(cfg["k"], dim=-1)
        z = torch.zeros_like(hidden).scatter_(-1, i, v.relu())
    else:  # jumprelu, jumprelu_transcoder
        z = hidden.relu() * (hidden > w["threshold"])
    return z @ w["W_dec"] + w["b_dec"]


X = torch.randn(40, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(("name", "arch", "sites"), [
    ("relu", "standard", {}), ("topk", "topk", {}), ("batchtopk", "jumprelu", {}),
    ("jumprelu", "jumprelu", {}), ("matryoshka", "jumprelu", {}),
    ("relu", "transcoder", {"input_site": "L2.resid_mid", "output_site": "L2.mlp_out", "d_out": 10}),
    ("jumprelu", "jumprelu_transcoder", {"input_site": "L2.resid_mid", "output_site": "L2.mlp_out", "d_out": 10}),
])
def test_saelens_export_reproduces_our_forward_and_round_trips(name, arch, sites, tmp_path):
    d = build(name, input_site=sites.get("input_site", "L3.resid_post"), **{k: v for k, v in sites.items() if k != "input_site"})
    export_saelens(d, tmp_path / "sae", model_name="tiny")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    w = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert cfg["architecture"] == arch and cfg["d_in"] == 16 and cfg["d_sae"] == 64
    assert cfg["normalize_activations"] == "none" and cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    assert cfg["apply_b_dec_to_input"] is (not d.is_transcoder)
    assert cfg["metadata"]["hook_name"] == d.cfg.input_site and int(cfg["metadata"]["sae_lens_version"][0]) >= 6
    if arch == "topk":
        assert cfg["k"] == 4 and cfg["rescale_acts_by_decoder_norm"] is False
    if d.is_transcoder:
        assert cfg["d_out"] == 10 and cfg["metadata"]["hook_name_out"] == "L2.mlp_out"
    assert w["W_enc"].shape == (16, 64) and w["W_dec"].shape == (64, d.cfg.width_out)
    assert ("threshold" in w) == arch.startswith("jumprelu")
    torch.testing.assert_close(saelens_forward(cfg, w, X), d(X), atol=1e-5, rtol=1e-5)

    back = load_dictionary(tmp_path / "sae")
    assert back.cfg.d_in == 16 and back.cfg.d_sae == 64 and back.cfg.input_site == d.cfg.input_site
    torch.testing.assert_close(back(X), d(X), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.encode(X), d.encode(X), atol=1e-5, rtol=1e-5)


def test_topk_transcoders_cannot_be_exported(tmp_path):
    d = DICTIONARIES.get("transcoder")(DictionaryConfig(arch="transcoder", d_in=16, d_sae=64, k=4,
                                                         input_site="L1.resid_mid", output_site="L1.mlp_out"))
    with pytest.raises(InterplabError, match="SAELens 6.x has no architecture for a 'transcoder' transcoder"):
        export_saelens(d, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _write_saelens(path, cfg, tensors):
    path.mkdir()
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(path / "sae_weights.safetensors"))


def _random_weights(d_out=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(16, 64, generator=g) / 4, "W_dec": torch.randn(64, d_out, generator=g) * 2,
            "b_enc": torch.randn(64, generator=g) / 10, "b_dec": torch.randn(d_out, generator=g)}


def test_saelens_variants_load_exactly(tmp_path):
    meta = {"sae_lens_version": "6.5.0", "hook_name": "blocks.3.hook_resid_post"}
    # apply_b_dec_to_input=False on an SAE: folded into b_enc
    w = _random_weights()
    cfg = {"architecture": "standard", "d_in": 16, "d_sae": 64, "apply_b_dec_to_input": False,
           "normalize_activations": "expected_average_only_in", "metadata": meta}
    _write_saelens(tmp_path / "a", cfg, w)
    d = load_dictionary(tmp_path / "a")
    assert d.arch == "relu" and d.cfg.input_site == "blocks.3.hook_resid_post"
    torch.testing.assert_close(d(X), saelens_forward(cfg, w, X), atol=1e-5, rtol=1e-5)

    # TopK with rescale_acts_by_decoder_norm (SAELens' training default): the norm is folded
    w = _random_weights(seed=1)
    cfg = {"architecture": "topk", "d_in": 16, "d_sae": 64, "k": 5, "rescale_acts_by_decoder_norm": True, "metadata": meta}
    _write_saelens(tmp_path / "b", cfg, w)
    n = w["W_dec"].norm(dim=-1)
    hidden = (X - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    hidden = hidden * n
    v, i = hidden.topk(5, dim=-1)
    z = torch.zeros_like(hidden).scatter_(-1, i, v.relu())
    want = (z / n) @ w["W_dec"] + w["b_dec"]
    d = load_dictionary(tmp_path / "b")
    assert d.arch == "topk" and d.cfg.k == 5
    torch.testing.assert_close(d(X), want, atol=1e-5, rtol=1e-5)

    # a BatchTopK training save (topk_threshold) loads as batchtopk, not as a ReLU SAE
    w = {**_random_weights(seed=2), "topk_threshold": torch.tensor(0.4)}
    cfg = {"architecture": "batchtopk", "d_in": 16, "d_sae": 64, "k": 4.0, "metadata": meta}
    _write_saelens(tmp_path / "c", cfg, w)
    d = load_dictionary(tmp_path / "c")
    assert d.arch == "batchtopk" and float(d.threshold) == pytest.approx(0.4)
    torch.testing.assert_close(d(X), saelens_forward({**cfg, "architecture": "jumprelu", "apply_b_dec_to_input": True},
                                                     {**w, "threshold": torch.full((64,), 0.4)}, X), atol=1e-5, rtol=1e-5)

    # a pre-6.0 config (no architecture key; activation_fn_str / hook_point)
    w = _random_weights(seed=3)
    _write_saelens(tmp_path / "d", {"d_in": 16, "d_sae": 64, "activation_fn_str": "relu",
                                    "hook_point": "blocks.1.hook_resid_pre"}, w)
    d = load_dictionary(tmp_path / "d")
    assert d.arch == "relu" and d.cfg.input_site == "blocks.1.hook_resid_pre"
    torch.testing.assert_close(d(X), saelens_forward({"architecture": "standard", "apply_b_dec_to_input": True}, w, X))


def test_saelens_unsupported_pieces_are_clear_errors(tmp_path):
    _write_saelens(tmp_path / "g", {"architecture": "gated", "d_in": 16, "d_sae": 64}, _random_weights())
    with pytest.raises(InterplabError, match="is a SAELens 'gated' checkpoint, which interplab cannot load; supported"):
        load_dictionary(tmp_path / "g")
    _write_saelens(tmp_path / "n", {"architecture": "standard", "d_in": 16, "d_sae": 64,
                                    "normalize_activations": "layer_norm"}, _random_weights())
    with pytest.raises(InterplabError, match="normalize_activations='layer_norm'"):
        load_dictionary(tmp_path / "n")
    _write_saelens(tmp_path / "j", {"architecture": "jumprelu", "d_in": 16, "d_sae": 64}, _random_weights())
    with pytest.raises(InterplabError, match=r"lacks tensors \['threshold'\]"):
        load_dictionary(tmp_path / "j")


# -- sparsify ---------------------------------------------------------------------------------
class FakeSparseCoder(nn.Module):
    """The parameter layout of sparsify 1.3's SparseCoder (encoder Linear, W_dec, b_dec, W_skip)."""

    def __init__(self, d_in, n, skip, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.encoder = nn.Linear(d_in, n)
        with torch.no_grad():
            self.encoder.weight.copy_(torch.randn(n, d_in, generator=g) / 4)
            self.encoder.bias.copy_(torch.randn(n, generator=g) / 10)
        self.W_dec = nn.Parameter(torch.randn(n, d_in, generator=g))
        self.b_dec = nn.Parameter(torch.randn(d_in, generator=g))
        self.W_skip = nn.Parameter(torch.randn(d_in, d_in, generator=g) / 4) if skip else None


def write_sparsify(path, *, transcode=False, skip=False, k=4, seed=0, **extra):
    """As ``SparseCoder.save_to_disk``: save_model(self, sae.safetensors) + cfg.to_dict() | d_in."""
    sc = FakeSparseCoder(16, 64, skip, seed)
    path.mkdir(parents=True)
    save_model(sc, str(path / "sae.safetensors"))
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": 64, "k": k,
           "multi_topk": False, "skip_connection": skip, "transcode": transcode, **extra, "d_in": 16}
    (path / "cfg.json").write_text(json.dumps(cfg))
    return sc


def sparsify_forward(sc, x, k, transcode):
    """SparseCoder.forward written out: relu(encoder(x - b_dec?)) top-k, embedding-bag decode, skip."""
    with torch.no_grad():
        pre = torch.relu((x if transcode else x - sc.b_dec) @ sc.encoder.weight.T + sc.encoder.bias)
        v, i = pre.topk(k, dim=-1, sorted=False)
        out = nn.functional.embedding_bag(i, sc.W_dec, per_sample_weights=v, mode="sum") + sc.b_dec
        if sc.W_skip is not None:
            out = out + x @ sc.W_skip.mT
        return out, v, i


@pytest.mark.parametrize(("transcode", "skip", "arch"), [
    (False, False, "topk"), (True, False, "transcoder"), (True, True, "skip_transcoder"),
])
def test_sparsify_checkpoints_load_with_sparsify_outputs(transcode, skip, arch, tmp_path):
    sc = write_sparsify(tmp_path / "layers.5.mlp", transcode=transcode, skip=skip, k=6)
    d = load_dictionary(tmp_path / "layers.5.mlp")
    assert d.arch == arch and d.cfg.k == 6 and d.cfg.d_sae == 64
    assert d.cfg.input_site == ("layers.5.mlp:input" if transcode else "layers.5.mlp")
    want, v, i = sparsify_forward(sc, X, 6, transcode)
    torch.testing.assert_close(d(X), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.encode(X).gather(-1, i), v, atol=1e-6, rtol=1e-6)


def test_sparsify_errors_name_what_was_found(tmp_path):
    write_sparsify(tmp_path / "run" / "layers.1", seed=1)
    write_sparsify(tmp_path / "run" / "layers.2", seed=2)
    with pytest.raises(InterplabError, match=r"one per hookpoint \('layers.1', 'layers.2'\); pass one of them"):
        load_dictionary(tmp_path / "run")
    write_sparsify(tmp_path / "g", activation="groupmax")
    with pytest.raises(InterplabError, match="sparsify activation 'groupmax' is not supported"):
        load_dictionary(tmp_path / "g")
    write_sparsify(tmp_path / "s", skip=True)
    with pytest.raises(InterplabError, match="SAE with skip_connection .* is not supported"):
        load_dictionary(tmp_path / "s")


def test_unrecognised_directories_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InterplabError, match="not a dictionary checkpoint I recognise: found nothing"):
        load_dictionary(tmp_path / "empty")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "cfg.json").write_text("{}")
    with pytest.raises(InterplabError, match=r"found \['cfg.json'\]"):
        load_dictionary(tmp_path / "half")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InterplabError, match="is not an interplab dictionary"):
        load_dictionary(tmp_path / "other")
    with pytest.raises(InterplabError, match="is not a directory"):
        load_dictionary(tmp_path / "missing")


def test_sparsify_encoder_source_agrees(tmp_path):
    """Run sparsify's own encoder (``make test`` installs eai-sparsify with --no-deps; the file
    needs only torch, the package itself imports simple_parsing, so it is loaded by path)."""
    import importlib.util

    spec = importlib.util.find_spec("sparsify")
    assert spec is not None and spec.submodule_search_locations, (
        "eai-sparsify is not installed; `make test` installs it (pip install --no-deps eai-sparsify==1.3.3)")
    file = f"{spec.submodule_search_locations[0]}/fused_encoder.py"
    mod_spec = importlib.util.spec_from_file_location("_sparsify_fused_encoder", file)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    sc = write_sparsify(tmp_path / "layers.0", transcode=False, k=5, seed=4)
    with torch.no_grad():
        v, i, _ = mod.fused_encoder(X - sc.b_dec, sc.encoder.weight, sc.encoder.bias, 5, "topk")
        want = nn.functional.embedding_bag(i, sc.W_dec, per_sample_weights=v, mode="sum") + sc.b_dec
    d = load_dictionary(tmp_path / "layers.0")
    torch.testing.assert_close(d(X), want, atol=1e-5, rtol=1e-5)
