"""Held-out means held out: eval-sae's text starts past every corpus token its store read, at
any evaluation context length, and the run record says where.

A store is harvested at ctx_len 16 from documents of random letters (so no stretch of text
repeats by chance); evaluation contexts are packed at 8, 16 and 32 tokens (a scaled-down
128-token store evaluated at 64, 128 and 256 / 32), and none of them may occur, BOS excluded,
anywhere in the token ids the store kept.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

import interplab
from interplab.activations import ActivationStore, HarvestConfig, harvest, pack
from interplab.activations.corpus import CorpusConfig, iter_documents
from interplab.cli.main import main
from interplab.core.errors import InputError
from interplab.dictionary import DICTIONARIES, DictionaryConfig
from interplab.dictionary.eval_run import EvalSaeConfig, held_out_contexts

from .test_harvest import save_tiny

N_TOKENS, STORE_CTX = 300, 16  # 20 contexts of 15 stream tokens: the store read 300 tokens


def random_docs(n_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(20, 70))).strip()
            for _ in range(n_docs)]


def write_docs(path, docs) -> str:
    path.write_text("\n\n".join(docs) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("held-out")
    model_dir = save_tiny(root / "model")
    tiny = interplab.load(model_dir)
    corpus = write_docs(root / "docs.txt", random_docs(120))
    cfg = HarvestConfig(out=str(root / "store"), model="tiny", sites=("L1.resid_post",), n_tokens=N_TOKENS,
                        ctx_len=STORE_CTX, batch_size=4, dtype="float32", shard_tokens=150, corpus=corpus)
    harvest(tiny, cfg, progress=False)
    return {"root": root, "model_dir": model_dir, "tiny": tiny, "corpus": corpus, "store": str(root / "store")}


def store_stream(store: str) -> bytes:
    """The corpus tokens the store read, BOS dropped, in order (the char tokenizer's ids < 256)."""
    ids = ActivationStore.open(store).tokens()[:, 1:].reshape(-1)
    assert int(ids.max()) < 256
    return bytes(ids.tolist())


def overlapping(contexts: torch.Tensor, stream: bytes) -> int:
    return sum(bytes(row[1:].tolist()) in stream for row in contexts)


def eval_cfg(world, **kw) -> EvalSaeConfig:
    return EvalSaeConfig(dictionary="unused", corpus=world["corpus"], store=world["store"], **kw)


def first_held_out_document(world) -> tuple[int, int]:
    """(index, stream offset) of the first document starting at or after the store's tokens,
    counted by hand: one token per character, one separator between documents."""
    docs = list(iter_documents(CorpusConfig(source=world["corpus"])))
    start = 0
    for i, doc in enumerate(docs):
        if start >= N_TOKENS:
            return i, start
        start += len(doc) + 1
    raise AssertionError("the corpus is too short for this test")


@pytest.mark.parametrize("ctx_len", [8, 16, 32])
def test_no_evaluation_context_occurs_in_the_store(world, ctx_len):
    stream = store_stream(world["store"])
    assert len(stream) == N_TOKENS
    contexts, record = held_out_contexts(world["tiny"], eval_cfg(world, ctx_len=ctx_len, n_contexts=8))
    assert contexts.shape == (8, ctx_len)
    assert overlapping(contexts, stream) == 0
    # It starts exactly at the first document the store did not touch: no more is skipped.
    index, offset = first_held_out_document(world)
    assert record["documents_skipped"] == index and record["tokens_skipped"] == offset
    assert record["store_tokens"] == N_TOKENS and record["store_contexts"] == 20 and record["store_ctx_len"] == 16
    docs = list(iter_documents(CorpusConfig(source=world["corpus"])))
    expected = [world["tiny"].tokenizer.bos_token_id, *world["tiny"].tokenizer(docs[index], add_special_tokens=False)["input_ids"]]
    assert contexts[0].tolist() == expected[:ctx_len]


def test_skipping_the_stores_context_count_at_another_length_was_not_held_out(world):
    """The check has teeth: the old rule (skip the store's number of contexts, counted at the
    evaluation's own length) evaluates on training text at ctx_len 8; the new one does not."""
    tiny, stream = world["tiny"], store_stream(world["store"])
    docs = iter_documents(CorpusConfig(source=world["corpus"]))
    skip = math.ceil(N_TOKENS / (STORE_CTX - 1))
    old = pack(tiny.tokenizer, docs, 8, max_contexts=skip + 8)[skip:]
    assert overlapping(old, stream) == 8
    new, _ = held_out_contexts(tiny, eval_cfg(world, ctx_len=8, n_contexts=8))
    assert overlapping(new, stream) == 0


def test_skip_contexts_counts_past_the_stores_text(world):
    base, rec0 = held_out_contexts(world["tiny"], eval_cfg(world, ctx_len=8, n_contexts=6))
    later, rec = held_out_contexts(world["tiny"], eval_cfg(world, ctx_len=8, n_contexts=4, skip_contexts=2))
    assert torch.equal(later, base[2:])
    assert rec["tokens_skipped"] == rec0["tokens_skipped"] + 2 * 7 and rec["contexts_skipped"] == 2


def test_more_contexts_than_the_held_out_text_holds_names_how_many(world):
    tiny = world["tiny"]
    _, record = held_out_contexts(tiny, eval_cfg(world, ctx_len=32, n_contexts=1))
    docs = list(iter_documents(CorpusConfig(source=world["corpus"])))[record["documents_skipped"]:]
    available = pack(tiny.tokenizer, docs, 32).shape[0]
    with pytest.raises(InputError, match=rf"packs into only {available} contexts of 32 tokens; --n-contexts asks "
                                         rf"10000\. Use --n-contexts {available} or fewer"):
        held_out_contexts(tiny, eval_cfg(world, ctx_len=32, n_contexts=10_000))
    held_out_contexts(tiny, eval_cfg(world, ctx_len=32, n_contexts=available))  # exactly all: fine


def test_another_corpus_than_the_stores_is_refused(world, tmp_path):
    other = write_docs(tmp_path / "other.txt", random_docs(60, seed=5))
    with pytest.raises(InputError, match=r"does not reproduce the store .*context 0 differs.*harvested from corpus"):
        held_out_contexts(world["tiny"], EvalSaeConfig(dictionary="x", corpus=other, store=world["store"], ctx_len=8))
    # The same corpus reached by another path is fine: the tokens decide, not the spelling.
    same = tmp_path / "same.txt"
    same.write_text(Path(world["corpus"]).read_text())
    contexts, _ = held_out_contexts(world["tiny"], EvalSaeConfig(dictionary="x", corpus=str(same),
                                                                 store=world["store"], ctx_len=8, n_contexts=2))
    assert overlapping(contexts, store_stream(world["store"])) == 0


def test_a_store_that_read_every_document_leaves_nothing_held_out(world, tmp_path):
    corpus = write_docs(tmp_path / "two.txt", [d * 2 for d in random_docs(2, seed=3)])  # 40-140 chars each
    n = len(next(iter_documents(CorpusConfig(source=corpus)))) + 10  # reaches into the second one
    cfg = HarvestConfig(out=str(tmp_path / "store"), model="tiny", sites=("L1.resid_post",), n_tokens=n,
                        ctx_len=STORE_CTX, dtype="float32", corpus=corpus)
    harvest(world["tiny"], cfg, progress=False)
    with pytest.raises(InputError, match=r"Nothing of the corpus .* is held out from the store .*read all 2 documents"):
        held_out_contexts(world["tiny"], EvalSaeConfig(dictionary="x", corpus=corpus, store=cfg.out, ctx_len=8))


def test_the_run_record_states_the_offset(world, capsys):
    root = world["root"]
    sae = DICTIONARIES.get("topk")(DictionaryConfig(d_in=64, d_sae=128, k=4, input_site="L1.resid_post"))
    sae.save(root / "sae")
    code = main(["eval-sae", "--dictionary", str(root / "sae"), "--model", world["model_dir"], "--corpus",
                 world["corpus"], "--store", world["store"], "--ctx-len", "8", "--n-contexts", "4",
                 "--batch-size", "4", "--n-resamples", "50", "--n-features", "1", "--out", str(root / "runs")])
    out = capsys.readouterr()
    assert code == 0, out.err
    run = next((root / "runs").glob("eval-sae-*"))
    held = json.loads((run / "results.json").read_text())["held_out"]
    index, offset = first_held_out_document(world)
    assert held["documents_skipped"] == index and held["tokens_skipped"] == offset
    assert held["store"] == world["store"] and held["store_tokens"] == N_TOKENS and held["ctx_len"] == 8
    report = (run / "report.html").read_text()
    assert f"starts at corpus token {offset:,}" in report and f"skips the first {index:,} documents" in report
