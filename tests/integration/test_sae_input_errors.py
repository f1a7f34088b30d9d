"""Every bad input to harvest / train-sae / eval-sae is a clear error before any work: an hf:
corpus while offline (at once, without touching the network), contexts longer than the model's
positions, a store that cannot fit the disk, and sizes the corpus cannot give."""

from __future__ import annotations

import shutil
import sys
import time
import types
from collections import namedtuple

import pytest

import interplab
from interplab.activations import CorpusConfig, HarvestConfig, OnTheFlySource, harvest, iter_documents
from interplab.activations import corpus as corpus_mod
from interplab.cli.main import main
from interplab.core.config import build_config
from interplab.core.errors import ConfigError, InputError
from interplab.dictionary import DICTIONARIES, DictionaryConfig
from interplab.dictionary.eval_run import EvalSaeConfig

from .test_harvest import save_tiny, write_corpus

SITES = ("L0.resid_post", "L1.mlp_out")  # 64 values each on the tiny model (64 positions)
Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae-errors")
    model_dir = save_tiny(root / "model")
    return {"root": root, "model_dir": model_dir, "tiny": interplab.load(model_dir),
            "corpus": write_corpus(root / "docs.txt", n_docs=40)}


@pytest.fixture
def online_env(monkeypatch):
    """No offline flags, no proxies, and a network probe that must never run for real."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT", "HTTPS_PROXY", "https_proxy",
                "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(corpus_mod, "hub_reachable", lambda url, timeout: pytest.fail("probe not patched"))
    return monkeypatch


def config(world, out, **kw) -> HarvestConfig:
    base = dict(out=str(out), model="tiny", sites=SITES, n_tokens=200, ctx_len=16, batch_size=4,
                dtype="float32", shard_tokens=60, corpus=world["corpus"])
    return HarvestConfig(**{**base, **kw})


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


# -- an hf: corpus while offline ---------------------------------------------------------------
@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_hf_corpus_with_an_offline_flag_is_refused_at_once(online_env, var):
    online_env.setenv(var, "1")
    started = time.perf_counter()
    with pytest.raises(InputError, match=rf"'hf:wikitext:wikitext-2-raw-v1' is streamed from the Hugging Face Hub, "
                                         rf"but {var}=1 says this machine is offline\. Use a local corpus"):
        iter_documents(CorpusConfig(source="hf:wikitext:wikitext-2-raw-v1"))
    assert time.perf_counter() - started < 1.0


def test_hf_corpus_when_the_hub_does_not_answer_is_refused_after_the_short_probe(online_env):
    online_env.setitem(sys.modules, "datasets", types.ModuleType("datasets"))  # installed, never called
    online_env.setenv("HF_ENDPOINT", "https://hub.example")
    asked = []
    online_env.setattr(corpus_mod, "hub_reachable", lambda url, timeout: asked.append((url, timeout)) or False)
    with pytest.raises(InputError, match=r"https://hub\.example did not answer within 3 s: this machine looks offline"):
        iter_documents(CorpusConfig(source="hf:some/dataset"))
    assert asked == [("https://hub.example", corpus_mod.HUB_PROBE_S)]
    # When it answers, the stream is built (lazily: the dataset is opened at the first document).
    online_env.setattr(corpus_mod, "hub_reachable", lambda url, timeout: True)
    iter_documents(CorpusConfig(source="hf:some/dataset"))


def test_the_probe_reports_a_closed_port_as_unreachable(online_env):
    online_env.undo()  # the real probe, on this machine's loopback only (port 1: nothing listens)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        online_env.delenv(var, raising=False)
    started = time.perf_counter()
    assert corpus_mod.hub_reachable("http://127.0.0.1:1/", 2.0) is False
    assert time.perf_counter() - started < 2.5


def test_harvest_cli_refuses_an_offline_hf_corpus_before_loading_the_model(online_env, tmp_path, capsys):
    online_env.setenv("HF_HUB_OFFLINE", "1")
    # The model does not exist: the corpus error must come first, before any model is loaded.
    code = main(["harvest", "--model", str(tmp_path / "no-model"), "--corpus", "hf:wikitext", "--sites",
                 "L0.resid_post", "--out", str(tmp_path / "store")])
    assert code == 2
    assert "HF_HUB_OFFLINE=1 says this machine is offline" in _err(capsys)
    assert not (tmp_path / "store").exists()
    code = main(["train-sae", "--on-the-fly", "--model", str(tmp_path / "no-model"), "--corpus", "hf:wikitext",
                 "--sites", "L0.resid_post", "--steps", "2", "--out", str(tmp_path / "sae")])
    assert code == 2 and "HF_HUB_OFFLINE=1 says this machine is offline" in _err(capsys)


# -- contexts longer than the model allows -----------------------------------------------------
def test_harvest_ctx_len_beyond_the_models_positions(world, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"ctx_len=100 exceeds the 64 positions model was built for .*use ctx_len <= 64"):
        harvest(world["tiny"], config(world, tmp_path / "s", ctx_len=100), progress=False)
    assert not (tmp_path / "s").exists()
    code = main(["harvest", "--model", world["model_dir"], "--corpus", world["corpus"], "--sites", "L0.resid_post",
                 "--ctx-len", "65", "--n-tokens", "100", "--out", str(tmp_path / "c")])
    assert code == 2 and "ctx_len=65 exceeds the 64 positions" in _err(capsys)
    assert not (tmp_path / "c").exists()  # refused before any work: no store, no record
    # 64 is the limit itself: allowed.
    assert harvest(world["tiny"], config(world, tmp_path / "ok", ctx_len=64, n_tokens=63, shard_tokens=63),
                   progress=False).complete


def test_on_the_fly_ctx_len_beyond_the_models_positions(world, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"ctx_len=128 exceeds the 64 positions"):
        OnTheFlySource(world["tiny"], CorpusConfig(source=world["corpus"]), ["L0.resid_post"])
    code = main(["train-sae", "--on-the-fly", "--model", world["model_dir"], "--corpus", world["corpus"],
                 "--sites", "L0.resid_post", "--steps", "2", "--ctx-len", "80", "--out", str(tmp_path / "sae")])
    assert code == 2 and "ctx_len=80 exceeds the 64 positions" in _err(capsys)


def test_eval_ctx_len_beyond_the_models_positions(world, tmp_path, capsys):
    sae = DICTIONARIES.get("topk")(DictionaryConfig(d_in=64, d_sae=128, k=4, input_site="L1.resid_post"))
    sae.save(tmp_path / "sae")
    code = main(["eval-sae", "--dictionary", str(tmp_path / "sae"), "--model", world["model_dir"],
                 "--corpus", world["corpus"], "--ctx-len", "128", "--out", str(tmp_path / "runs")])
    assert code == 2 and "--ctx-len=128 exceeds the 64 positions model was built for" in _err(capsys)


# -- a store that cannot fit the disk ----------------------------------------------------------
def test_harvest_refuses_a_store_larger_than_the_free_space(world, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 50_000, 50_000))
    # 200 tokens x (64 + 64) values x 4 bytes = 102,400 bytes, plus the token ids.
    with pytest.raises(InputError, match=r"The store would need about 101\.7 KiB on disk: 200 more tokens × 128 values "
                                         r"\(L0\.resid_post 64, L1\.mlp_out 64\) × 4 bytes \(float32\), plus the token "
                                         r"ids; the filesystem of .* has 48\.8 KiB free\. .*about 96 fit"):
        harvest(world["tiny"], config(world, tmp_path / "s"), progress=False)
    assert not (tmp_path / "s").exists()
    # bfloat16 halves it, and then it fits.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9 - 60_000, 60_000))
    assert harvest(world["tiny"], config(world, tmp_path / "s", dtype="bfloat16"), progress=False).complete


def test_disk_check_counts_only_what_a_resume_still_writes(world, tmp_path, monkeypatch):
    out = tmp_path / "s"
    harvest(world["tiny"], config(world, out, n_tokens=120), progress=False)  # 8 contexts of 15 rows
    # The complete store needs nothing more: even a full disk lets the same command finish.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 0))
    assert harvest(world["tiny"], config(world, out, n_tokens=120), progress=False).shards_written == 0


# -- absurd sizes ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, -5])
def test_harvest_n_tokens_must_be_positive(world, tmp_path, n):
    with pytest.raises(ConfigError, match=rf"n_tokens must be >= 1, got {n}"):
        config(world, tmp_path / "s", n_tokens=n)


def test_harvest_n_tokens_beyond_the_corpus_is_refused_before_any_work(world, tmp_path):
    with pytest.raises(InputError, match=r"packs into only \d+ contexts of 16 tokens \(\d+ rows\), fewer than the "
                                         r"1000000 tokens asked .*Use n_tokens \d+ or fewer"):
        harvest(world["tiny"], config(world, tmp_path / "s", n_tokens=1_000_000), progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("field,value", [("n_contexts", 0), ("n_contexts", -3), ("skip_contexts", -1), ("ctx_len", 1)])
def test_eval_sizes_out_of_range(field, value):
    with pytest.raises(ConfigError, match=field):
        build_config(EvalSaeConfig, {"dictionary": "d", field: value})


def test_eval_more_contexts_than_the_corpus_holds_names_how_many(world, tmp_path, capsys):
    sae = DICTIONARIES.get("topk")(DictionaryConfig(d_in=64, d_sae=128, k=4, input_site="L1.resid_post"))
    sae.save(tmp_path / "sae")
    code = main(["eval-sae", "--dictionary", str(tmp_path / "sae"), "--model", world["model_dir"],
                 "--corpus", world["corpus"], "--ctx-len", "16", "--n-contexts", "100000",
                 "--out", str(tmp_path / "runs")])
    err = _err(capsys)
    assert code == 2 and "--n-contexts asks 100000" in err
    assert "from the corpus start) packs into only" in err and "Use --n-contexts" in err
