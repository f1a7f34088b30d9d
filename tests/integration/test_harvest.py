"""Harvest on a tiny random model saved to disk with a character tokenizer: the store holds
exactly the full forward's activations, early stopping is bit-identical, resume finishes the
same store, mismatched resumes and a full disk are refused with messages that teach, and the
on-the-fly source is deterministic."""

from __future__ import annotations

import errno
import itertools
import json
import random

import pytest
import torch

import interplab
from interplab.activations import (
    ActivationStore,
    CorpusConfig,
    HarvestConfig,
    OnTheFlySource,
    StoreError,
    harvest,
)
from interplab.activations import shards as st
from interplab.core.errors import ConfigError, InterplabError

from .families import assert_clean, build

SITES = ("L0.resid_post", "L1.mlp_out")
CHARS = "abcdefghijklmnopqrstuvwxyz ."


def char_tokenizer():
    from tokenizers import Tokenizer, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{c: 4 + i for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def save_tiny(directory, family: str = "llama") -> str:
    build(family).save_pretrained(directory)
    char_tokenizer().save_pretrained(directory)
    return str(directory)


def write_corpus(path, n_docs: int = 40, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["".join(rng.choice(CHARS[:26]) for _ in range(rng.randint(1, 7))) for _ in range(200)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + "." for _ in range(n_docs)]
    path.write_text("\n\n".join(docs) + "\n")
    return str(path)


def config(out, corpus, **kw) -> HarvestConfig:
    base = dict(out=str(out), model="tiny", sites=SITES, n_tokens=200, ctx_len=16, batch_size=3,
                dtype="float32", shard_tokens=60, corpus=corpus)
    return HarvestConfig(**{**base, **kw})


# -- early stopping ----------------------------------------------------------------------------
def test_stop_after_last_site_is_bit_identical(model, family, ids):
    last = family.n_layers - 1
    site_sets = [["embed"], ["L0.resid_pre", "L0.attn.z"], [f"L{last}.resid_post", "L0.mlp_out"],
                 [f"L{last}.mlp.hidden"], ["ln_final", "L0.attn.q[h1]"]]
    for sites in site_sets:
        logits, full = model.run_with_cache(ids, sites)
        none, early = model.run_with_cache(ids, sites, stop_after_last_site=True)
        assert none is None and logits is not None
        assert set(early) == set(full)
        for s in full:
            assert torch.equal(early[s], full[s]), s
        assert_clean(model)


def test_stop_after_last_site_skips_the_later_layers(model, family, ids):
    calls = []
    last = model.hf.get_output_embeddings()
    handle = last.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.run_with_cache(ids, ["L0.resid_post"], stop_after_last_site=True)
        assert calls == []
        model.run_with_cache(ids, ["L0.resid_post"])
        assert calls == [1]
    finally:
        handle.remove()


# -- the store holds the forward's activations ---------------------------------------------------
def test_harvest_stores_exactly_the_full_forward(tiny, corpus, tmp_path):
    cfg = config(tmp_path / "s", corpus)
    report = harvest(tiny, cfg, progress=False)
    assert report.complete and report.n_tokens == 200 and report.n_shards == 4 and report.shards_written == 4
    assert report.tokens_per_s > 0 and 2 * 64 * 4 < report.bytes_per_token < 2 * 64 * 4 + 64
    store = ActivationStore.open(cfg.out)
    m = store.manifest
    assert [s["n_tokens"] for s in m["shards"]] == [60, 60, 60, 20]  # last shard cut to n_tokens
    assert m["rows_per_context"] == 15 and m["first_position"] == 1 and m["packing"]["bos_id"] == 1
    assert m["widths"] == {"L0.resid_post": 64, "L1.mlp_out": 64}
    assert m["model"]["weights_hash"] == tiny.source["weights_hash"]
    tokens = store.tokens()
    assert tokens.shape == (14, 16) and (tokens[:, 0] == 1).all()
    _, cache = tiny.run_with_cache(tokens, SITES)
    rows = store.read(0, 200)
    for s in SITES:
        want = cache[s][:, 1:].reshape(-1, 64)[:200]  # BOS position dropped, (context, position) order
        assert torch.equal(rows[s], want), s
    ctx, pos = store.locate(37)
    assert torch.equal(rows["L0.resid_post"][37], cache["L0.resid_post"][ctx, pos])
    store.check(m["model"]["name"], SITES)


def test_bfloat16_store_and_keeping_bos(tiny, corpus, tmp_path):
    f32 = ActivationStore.open(harvest(tiny, config(tmp_path / "a", corpus, drop_bos=False), progress=False).path)
    bf16 = ActivationStore.open(harvest(tiny, config(tmp_path / "b", corpus, dtype="bfloat16", drop_bos=False),
                                        progress=False).path)
    assert f32.manifest["rows_per_context"] == 16 and f32.manifest["first_position"] == 0
    a, b = f32.read(0, 200), bf16.read(0, 200)
    for s in SITES:
        assert b[s].dtype == torch.float32 and torch.equal(b[s], a[s].to(torch.bfloat16).float())
    assert bf16.manifest["tokens_per_shard"] == 48  # 60 rounded down to whole contexts of 16


def test_resume_finishes_the_same_store(tiny, corpus, tmp_path, monkeypatch):
    clean = harvest(tiny, config(tmp_path / "clean", corpus), progress=False)
    real, written = st.write_shard, []

    def dies_after_two(root, index, *a):
        if len(written) == 2:
            raise KeyboardInterrupt  # like Ctrl-C mid-harvest
        written.append(index)
        return real(root, index, *a)

    monkeypatch.setattr(st, "write_shard", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        harvest(tiny, config(tmp_path / "r", corpus), progress=False)
    monkeypatch.setattr(st, "write_shard", real)
    partial = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert [s["index"] for s in partial["shards"]] == [0, 1] and not partial["complete"]
    report = harvest(tiny, config(tmp_path / "r", corpus), progress=False)
    assert report.shards_written == 2 and report.shards_skipped == 2
    assert report.content_hash == clean.content_hash and report.n_tokens == 200
    again = harvest(tiny, config(tmp_path / "r", corpus), progress=False)  # nothing left to do
    assert again.shards_written == 0 and again.content_hash == clean.content_hash


def test_resume_refuses_another_model_or_layout(tiny, corpus, tmp_path):
    harvest(tiny, config(tmp_path / "s", corpus, n_tokens=60), progress=False)
    for change, message in [
        (dict(dtype="bfloat16"), r"harvested with dtype 'float32' \(model 'tiny-llama\d*'\), this run asks 'bfloat16'"),
        (dict(sites=("L0.resid_post",)), r"with sites \['L0.resid_post', 'L1.mlp_out'\].*asks \['L0.resid_post'\]"),
        (dict(ctx_len=8), r"with packing \{'ctx_len': 16.*asks \{'ctx_len': 8"),
    ]:
        with pytest.raises(StoreError, match=message + r".*Use another `out` directory, or overwrite=True"):
            harvest(tiny, config(tmp_path / "s", corpus, n_tokens=60, **change), progress=False)
    other = interplab.HookedModel(build("llama_gqa"), tiny.tokenizer, source={"name": "other"})
    with pytest.raises(StoreError, match=r"harvested with model '[0-9a-f]{64}' .*this run asks '[0-9a-f]{64}' \(model 'other'\)"):
        harvest(other, config(tmp_path / "s", corpus, n_tokens=60), progress=False)
    with pytest.raises(StoreError, match="already holds a store; pass resume=True to continue it or overwrite=True"):
        harvest(tiny, config(tmp_path / "s", corpus, n_tokens=60, resume=False), progress=False)
    report = harvest(tiny, config(tmp_path / "s", corpus, n_tokens=60, dtype="float16", overwrite=True), progress=False)
    assert report.complete and ActivationStore.open(report.path).manifest["dtype"] == "float16"
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="exists and is not an activation store"):
        harvest(tiny, config(tmp_path / "foreign", corpus), progress=False)


def test_disk_full_keeps_completed_shards_and_resumes(tiny, corpus, tmp_path, monkeypatch):
    real, calls = st._save, []

    def fills_up(tensors, path):
        calls.append(path)
        if len(calls) == 8:  # 3 files per shard: dies inside the third shard
            path.write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path)

    monkeypatch.setattr(st, "_save", fills_up)
    out = tmp_path / "s"
    with pytest.raises(InterplabError, match=r"Disk full while writing shard-00002 of .*: 120 of 200 tokens are "
                                             r"safely stored in 2 complete shards .*re-run the same command: it resumes"):
        harvest(tiny, config(out, corpus), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000", "shard-00001"]
    assert [s["index"] for s in json.loads((out / "manifest.json").read_text())["shards"]] == [0, 1]
    monkeypatch.setattr(st, "_save", real)
    assert harvest(tiny, config(out, corpus), progress=False).complete


def test_harvest_config_and_corpus_errors(tiny, corpus, tmp_path):
    with pytest.raises(ConfigError, match="Unknown dtype 'int8'; valid: 'bfloat16', 'float16', 'float32'"):
        config(tmp_path, corpus, dtype="int8")
    with pytest.raises(ConfigError, match="cannot be stored as"):
        config(tmp_path, corpus, sites=("L0.attn.pattern",))
    with pytest.raises(ConfigError, match="lists a site twice"):
        config(tmp_path, corpus, sites=("L0.resid_post", "L0.resid_post"))
    with pytest.raises(ConfigError, match=r"shard_tokens \(10\) is less than one context's 15 rows"):
        harvest(tiny, config(tmp_path / "x", corpus, shard_tokens=10), progress=False)
    with pytest.raises(InterplabError, match=r"packs into only \d+ contexts of 16 tokens .*fewer than the 100000 tokens"):
        harvest(tiny, config(tmp_path / "y", corpus, n_tokens=100_000, shard_tokens=100_000), progress=False)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ab\xffcd")
    with pytest.raises(InterplabError, match="not valid UTF-8: byte offset 2"):
        harvest(tiny, config(tmp_path / "z", str(bad)), progress=False)
    assert not (tmp_path / "z").exists()  # refused before any work


# -- on the fly --------------------------------------------------------------------------------
def test_on_the_fly_source_is_deterministic_and_holds_forward_rows(tiny, corpus, tmp_path):
    src = OnTheFlySource(tiny, CorpusConfig(source=corpus), SITES, ctx_len=16, buffer_tokens=90,
                         model_batch_size=2)
    assert src.sites == list(SITES) and src.width("L1.mlp_out") == 64
    got = list(itertools.islice(src.batches(10, seed=5), 8))
    again = list(itertools.islice(src.batches(10, seed=5), 8))
    tail = list(itertools.islice(src.batches(10, seed=5, start_batch=3), 5))
    other = next(src.batches(10, seed=6))
    for a, b in zip(got, again):
        assert all(torch.equal(a[s], b[s]) for s in SITES)
    for a, b in zip(got[3:], tail):
        assert all(torch.equal(a[s], b[s]) for s in SITES)
    assert not torch.equal(other["L0.resid_post"], got[0]["L0.resid_post"])
    stored = ActivationStore.open(harvest(tiny, config(tmp_path / "s", corpus), progress=False).path).read(0, 200)
    for s in SITES:
        rows = torch.cat([b[s] for b in got])  # 80 rows drawn from the first 5 forwards (10 contexts)
        assert (rows[:, None, :] == stored[s][None, :150]).all(-1).any(-1).all()
        assert (rows[:, None, 0] == rows[None, :, 0]).sum() == len(rows)  # no row twice
    with pytest.raises(interplab.core.errors.SiteError, match="computes no site L0.mlp_out"):
        src.width("L0.mlp_out")
