"""Data that is verified: a corrupt or damaged store or dictionary is an error naming the file
(and, for a store, the commands that repair it), never silent garbage or a parser traceback.

The end-to-end case is the issue's: 4,000 bytes overwritten in one shard used to train to NaN
with exit 0; now ``train-sae`` refuses, and the commands its message suggests give a working
store with the very same content hash."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import torch

from interplab.activations import ActivationStore, StoreError
from interplab.cli.main import main
from interplab.core.artifacts import ArtifactError
from interplab.dictionary import Dictionary, DictionaryConfig, load_dictionary
from interplab.dictionary.formats import export_saelens

from .test_harvest import save_tiny, write_corpus

SITES = "L1.resid_post,L1.mlp_out"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("verified")
    return save_tiny(root / "model"), write_corpus(root / "docs.txt", n_docs=120)


def _flat(captured) -> str:
    return " ".join(captured.err.split())


def harvest_cli(model, corpus, out, *extra) -> int:
    return main(["harvest", "--model", model, "--corpus", corpus, "--sites", SITES, "--n-tokens", "1200",
                 "--ctx-len", "16", "--shard-tokens", "300", "--dtype", "float32", "--out", str(out), *extra])


def train_cli(store, out) -> int:
    return main(["train-sae", "--store", str(store), "--sites", "L1.resid_post", "--expansions", "2", "--k", "4",
                 "--batch-size", "64", "--steps", "6", "--checkpoint-every", "3", "--out", str(out),
                 "--device", "cpu"])


def overwrite(path, offset: int, data: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset:offset + len(data)] = data
    path.write_bytes(bytes(raw))


def test_corrupt_shard_is_refused_and_the_suggested_commands_repair_it(setup, capsys, tmp_path):
    model, corpus = setup
    store = tmp_path / "store"
    assert harvest_cli(model, corpus, store) == 0
    good = json.loads((store / "manifest.json").read_text())["content_hash"]
    # The case: 4,000 bytes of one shard overwritten, with finite garbage (which no NaN
    # guard can catch: it used to train to FVU 12 with exit 0).
    victim = store / "shard-00002" / "L1.resid_post.safetensors"
    overwrite(victim, 10_000, torch.full((1000,), 1e4).numpy().tobytes())
    capsys.readouterr()
    assert train_cli(store, tmp_path / "sae") == 2
    err = _flat(capsys.readouterr())
    assert "shard-00002/L1.resid_post.safetensors is corrupt (hash mismatch)" in err
    assert not list((tmp_path / "sae").glob("dictionaries/*/weights.safetensors"))
    # Do exactly what the message says.
    rm = re.search(r"`rm -r ([^`]+)`", err).group(1)
    run = re.search(r"`interplab run ([^`]+)`", err).group(1)
    assert shlex.split(rm) == [str(store / "shard-00002")]
    shutil.rmtree(shlex.split(rm)[0])
    assert main(["run", *shlex.split(run)]) == 0
    capsys.readouterr()
    repaired = ActivationStore.open(store, verify=True)
    assert repaired.manifest["complete"] and repaired.manifest["content_hash"] == good
    assert train_cli(store, tmp_path / "sae") == 0, _flat(capsys.readouterr())
    (path,) = (tmp_path / "sae" / "dictionaries").glob("L1.*")
    assert torch.isfinite(Dictionary.load(path).W_dec).all()


def test_store_files_damaged_anywhere_are_named(setup, tmp_path):
    model, corpus = setup
    store = tmp_path / "s"
    assert harvest_cli(model, corpus, store) == 0
    # Reading order: shard by shard, each file hashed the first time it is read.
    overwrite(store / "shard-00001" / "tokens.safetensors", 0, b"\x00" * 16)
    opened = ActivationStore.open(store)  # cheap: reads no data
    with pytest.raises(StoreError, match=r"shard-00001/tokens.safetensors is corrupt \(hash mismatch\).*rm -r"):
        opened.tokens()
    with pytest.raises(StoreError, match=r"shard-00001/tokens.safetensors is corrupt"):
        ActivationStore.open(store, verify=True)
    # A truncated shard.json: named at open; a harvest re-run recomputes that shard.
    meta = store / "shard-00003" / "shard.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(StoreError, match=r"shard-00003/shard.json is not valid JSON .*truncated or damaged"):
        ActivationStore.open(store)
    shutil.rmtree(store / "shard-00001")
    assert harvest_cli(model, corpus, store) == 0
    assert ActivationStore.open(store, verify=True).manifest["complete"]
    # A truncated or edited manifest: named, with the command that rebuilds the store.
    manifest = store / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(StoreError, match=r"manifest.json is not valid JSON .*--overwrite"):
        ActivationStore.open(store)
    data = json.loads(text)
    data["shards"] = data["shards"][:2]
    manifest.write_text(json.dumps(data))
    with pytest.raises(StoreError, match=r"manifest.json is damaged: its content hash does not match"):
        ActivationStore.open(store)
    assert harvest_cli(model, corpus, store, "--overwrite") == 0
    assert ActivationStore.open(store, verify=True).manifest["content_hash"] == json.loads(text)["content_hash"]


def _dictionary(arch: str = "topk") -> Dictionary:
    from interplab.dictionary import DICTIONARIES

    d = DICTIONARIES.get(arch)(DictionaryConfig(arch=arch, d_in=8, d_sae=16, k=4, input_site="L0.resid_post"))
    torch.manual_seed(0)
    with torch.no_grad():
        d.b_dec.normal_()
    return d


def test_dictionary_files_are_hash_checked_and_named(tmp_path):
    d = _dictionary()
    d.save(tmp_path / "d")
    assert json.loads((tmp_path / "d" / "provenance.json").read_text())["files"]["weights.safetensors"]
    assert torch.equal(Dictionary.load(tmp_path / "d").b_dec, d.b_dec)
    weights = tmp_path / "d" / "weights.safetensors"
    size = weights.stat().st_size
    overwrite(weights, size - 8, b"\x7f" * 8)
    with pytest.raises(ArtifactError, match=r"d/weights.safetensors is corrupt: its SHA-256 differs.*train-sae"):
        Dictionary.load(tmp_path / "d")
    # Without a recorded hash (saved before there was one), a truncated file is still named.
    prov = json.loads((tmp_path / "d" / "provenance.json").read_text())
    del prov["files"]
    (tmp_path / "d" / "provenance.json").write_text(json.dumps(prov))
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(ArtifactError, match=r"weights.safetensors is not a readable safetensors file .*truncated"):
        load_dictionary(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text('{"format": "interplab-dicti')
    with pytest.raises(ArtifactError, match=r"d/config.json is not valid JSON .*truncated or damaged"):
        Dictionary.load(tmp_path / "d")
    (tmp_path / "d" / "provenance.json").write_text("\xff garbage")
    (tmp_path / "d" / "config.json").write_text(json.dumps({"format": "interplab-dictionary/1", "arch": "topk",
                                                            "config": d.cfg.to_json()}))
    with pytest.raises(ArtifactError, match=r"d/provenance.json is not valid JSON"):
        Dictionary.load(tmp_path / "d")


def test_non_finite_dictionary_weights_are_refused_at_load(tmp_path):
    d = _dictionary()
    with torch.no_grad():
        d.W_dec[3, :2] = float("nan")
    d.save(tmp_path / "nan")
    with pytest.raises(ArtifactError, match=r"nan/weights.safetensors: tensor 'W_dec' holds 2 non-finite values"):
        Dictionary.load(tmp_path / "nan")
    # A JumpReLU threshold of 0 is a log-threshold of -inf: legitimate, and it loads.
    j = _dictionary("jumprelu")
    with torch.no_grad():
        j.log_threshold[:3] = float("-inf")
    j.save(tmp_path / "j")
    assert torch.equal(Dictionary.load(tmp_path / "j").log_threshold, j.log_threshold)
    # Foreign layouts too: a SAELens directory with NaN weights, or a damaged one.
    export_saelens(_dictionary(), tmp_path / "sl")
    from safetensors.torch import load_file, save_file

    w = load_file(tmp_path / "sl" / "sae_weights.safetensors")
    w["W_enc"][0, 0] = float("nan")
    save_file(w, tmp_path / "sl" / "sae_weights.safetensors")
    with pytest.raises(ArtifactError, match=r"sae_weights.safetensors: tensor 'W_enc' holds 1 non-finite"):
        load_dictionary(tmp_path / "sl")
    (tmp_path / "sl" / "sae_weights.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ArtifactError, match=r"sl/sae_weights.safetensors is not a readable safetensors file"):
        load_dictionary(tmp_path / "sl")
    (tmp_path / "sl" / "cfg.json").write_text("{")
    with pytest.raises(ArtifactError, match=r"sl/cfg.json is not valid JSON"):
        load_dictionary(tmp_path / "sl")
