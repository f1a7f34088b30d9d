"""Resume is bound to its inputs (issue 11, item 3): a checkpoint records the identity of the
data it was trained on, and resuming it on other data is refused, naming both, with nothing
overwritten; the same data at another path resumes."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from interplab.activations import shards as st
from interplab.activations.source import TensorSource
from interplab.activations.store import ActivationStore
from interplab.cli.main import main
from interplab.core.errors import ConfigError
from interplab.dictionary import DictionaryConfig
from interplab.dictionary.checkpoint import latest_checkpoint, load_checkpoint
from interplab.dictionary.inputs import check_same_source, source_identity
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import train

SITE = "L1.resid_post"
DICT = [DictionaryConfig(arch="topk", d_in=8, d_sae=32, k=2, input_site=SITE)]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_store(root: Path, seed: int, rows=64, n_shards=2, d=8) -> Path:
    root.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    for i in range(n_shards):
        ids = torch.arange(rows // 4 * 5).reshape(-1, 5) + i * 1000
        st.write_shard(root, i, {SITE: torch.randn(rows, d, generator=g)}, ids, i * rows // 4)
    header = {"format": st.FORMAT, "model": {"name": "tiny", "weights_hash": "abc123"}, "sites": [SITE],
              "widths": {SITE: d}, "dtype": "float32", "rows_per_context": 4, "first_position": 1,
              "n_tokens": rows * n_shards, "tokens_per_shard": rows, "n_shards": n_shards}
    st.write_manifest(root, header, st.scan_shards(root))
    return root


def cfg(out, **kw):
    base = dict(steps=6, batch_size=16, lr=1e-3, log_every=2, checkpoint_every=3, init_tokens=16,
                out_dir=str(out), device="cpu")
    return TrainConfig(**{**base, **kw})


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resuming_on_another_store_is_refused_and_nothing_is_overwritten(tmp_path):
    a, b = make_store(tmp_path / "A", seed=1), make_store(tmp_path / "B", seed=2)
    first = train(ActivationStore.open(a), DICT, cfg(tmp_path / "out"), progress=False)
    ckpt = load_checkpoint(latest_checkpoint(tmp_path / "out"))
    hash_a = ActivationStore.open(a).manifest["content_hash"]
    assert ckpt.step == 3 and ckpt.source["kind"] == "store" and ckpt.source["hash"] == hash_a
    # The published dictionary names the data it was trained on.
    training = json.loads((first.paths[first.names[0]] / "training.json").read_text())
    assert training["source"]["hash"] == hash_a and training["source"]["path"] == str(a)
    before = snapshot(tmp_path / "out")
    hash_b = ActivationStore.open(b).manifest["content_hash"]
    with pytest.raises(ConfigError) as err:
        train(ActivationStore.open(b), DICT, cfg(tmp_path / "out"), progress=False)
    msg = str(err.value)
    assert f"trained on store {a} (content hash {hash_a[:16]}" in msg
    assert f"this run reads store {b} (content hash {hash_b[:16]}" in msg
    assert f"--store {a}" in msg
    assert snapshot(tmp_path / "out") == before


def test_the_same_store_at_another_path_resumes(tmp_path):
    a = make_store(tmp_path / "A", seed=1)
    train(ActivationStore.open(a), DICT, cfg(tmp_path / "out"), progress=False)
    moved = Path(shutil.copytree(a, tmp_path / "moved"))
    res = train(ActivationStore.open(moved), DICT, cfg(tmp_path / "out"), progress=False)
    assert res.resumed_from == 3 and res.source["path"] == str(moved)


def test_tensor_sources_are_bound_by_their_contents(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    train(TensorSource({SITE: x}), DICT, cfg(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="trained on tensors in memory .* but this run reads tensors in memory"):
        train(TensorSource({SITE: x + 1}), DICT, cfg(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="Cannot resume"):  # another order is other data too
        train(TensorSource({SITE: x}, shuffle=False), DICT, cfg(tmp_path / "out"), progress=False)
    assert train(TensorSource({SITE: x.clone()}), DICT, cfg(tmp_path / "out"), progress=False).resumed_from == 3


def test_an_incompatible_config_is_refused_naming_the_field(tmp_path):
    a = make_store(tmp_path / "A", seed=1)
    train(ActivationStore.open(a), DICT, cfg(tmp_path / "out"), progress=False)
    with pytest.raises(ConfigError, match="train.lr: 0.001 -> 0.002"):
        train(ActivationStore.open(a), DICT, cfg(tmp_path / "out", lr=2e-3), progress=False)


def test_on_the_fly_identity_follows_model_corpus_and_sites():
    @dataclass
    class Corpus:
        source: str

    class Model:
        source = {"name": "tiny", "weights_hash": "w1"}
        dtype = torch.float32

    class OnTheFly:
        def __init__(self, corpus, sites=(SITE,)):
            self.model, self.corpus_cfg, self.sites = Model(), Corpus(corpus), list(sites)
            self.ctx_len, self.buffer_tokens, self.model_batch_size, self.first_position = 16, 64, 8, 1

    one = source_identity(OnTheFly("classics"))
    assert one["kind"] == "on_the_fly" and one == source_identity(OnTheFly("classics"))
    assert one["hash"] != source_identity(OnTheFly("other.txt"))["hash"]
    other = source_identity(OnTheFly("classics", ("L0.resid_post",)))
    assert one["hash"] != other["hash"]
    with pytest.raises(ConfigError, match=r"\(sites: \['L1.resid_post'\] -> \['L0.resid_post'\]\)"):
        check_same_source(one, other, "ckpt")


def test_train_sae_cli_refuses_another_store_and_the_record_names_the_first(tmp_path, capsys):
    a, b = make_store(tmp_path / "A", seed=1), make_store(tmp_path / "B", seed=2)
    args = ["train-sae", "--expansions", "2", "--k", "2", "--batch-size", "16", "--init-tokens", "16",
            "--steps", "6", "--checkpoint-every", "3", "--device", "cpu", "--out", str(tmp_path / "run")]
    assert main([*args, "--store", str(a)]) == 0
    capsys.readouterr()
    record = next((tmp_path / "run").glob("train-topk-*"))
    results = json.loads((record / "results.json").read_text())
    assert json.dumps(results).count(str(a)) >= 1
    assert ActivationStore.open(a).manifest["content_hash"][:16] in json.dumps(results)
    before = snapshot(tmp_path / "run" / "dictionaries")
    assert main([*args, "--store", str(b)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"trained on store {a}" in err and f"this run reads store {b}" in err, err
    assert snapshot(tmp_path / "run" / "dictionaries") == before
    assert len(list((tmp_path / "run").glob("train-topk-*"))) == 1  # no record of the refused run
