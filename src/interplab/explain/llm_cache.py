"""A content-hash cache of language-model calls, so re-running a labelling is identical and fast.

Format: a JSON-lines file, one entry per line, appended as answers arrive:
``{"key": sha256, "kind": "complete" | "logprobs", "value": answer}``. The key is the SHA-256 of
the canonical JSON (sorted keys, no spaces) of ``{"backend": lm.identity(), "kind": kind,
"request": {...}}``: the backend (model name and weights hash, or endpoint URL and model), the
kind of call, the full prompt (messages) and the parameters (``max_tokens``; the candidates).
Each entry is one ``write`` of one line under a lock (append mode), and the file is read back
when the cache is opened; a line that does not parse (a crash mid-write, an edit) is skipped
with a logged warning, and the next write starts on a fresh line. A later entry for a key wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from interplab.explain.llm_backends import Messages, as_messages

log = logging.getLogger(__name__)


def key_of(backend: dict, kind: str, request: dict) -> str:
    blob = json.dumps({"backend": backend, "kind": kind, "request": request}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class LMCache:
    """Answers by content hash, kept in memory and appended to ``path`` (JSON lines)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, object] = {}
        self.hits = self.misses = self.corrupt = 0
        self._lock = threading.Lock()
        self._needs_newline = False
        if self.path.is_file():
            raw = self.path.read_bytes()
            self._needs_newline = bool(raw) and not raw.endswith(b"\n")
            for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[str(entry["key"])] = entry["value"]
                except (ValueError, KeyError, TypeError):
                    self.corrupt += 1
                    log.warning("LM cache %s: line %d is not a cache entry; skipped.", self.path, number)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str):
        """The stored answer (None when absent); counts a hit or a miss."""
        with self._lock:
            if key in self.entries:
                self.hits += 1
                return self.entries[key]
            self.misses += 1
            return None

    def put(self, key: str, kind: str, value) -> None:
        line = json.dumps({"key": key, "kind": kind, "value": value}, ensure_ascii=False) + "\n"
        with self._lock:
            self.entries[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(("\n" if self._needs_newline else "") + line)
                f.flush()
            self._needs_newline = False


class CachedLM:
    """``lm`` with every call looked up in ``cache`` first (same interface as the backends)."""

    def __init__(self, lm, cache: LMCache):
        self.lm, self.cache = lm, cache

    def identity(self) -> dict:
        return self.lm.identity()

    @property
    def hits(self) -> int:
        return self.cache.hits

    @property
    def misses(self) -> int:
        return self.cache.misses

    def complete(self, messages: Messages, max_tokens: int = 64) -> str:
        key = key_of(self.identity(), "complete", {"messages": as_messages(messages), "max_tokens": int(max_tokens)})
        found = self.cache.get(key)
        if found is not None:
            return found
        text = self.lm.complete(messages, max_tokens)
        self.cache.put(key, "complete", text)
        return text

    def logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str]) -> list[dict[str, float]]:
        backend = self.identity()
        keys = [key_of(backend, "logprobs", {"messages": as_messages(p), "candidates": list(candidates)})
                for p in prompts]
        out: list[dict | None] = []
        for k in keys:
            found = self.cache.get(k)
            out.append(None if found is None else {c: float(found[c]) for c in candidates})
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            fresh = self.lm.logprobs([prompts[i] for i in todo], candidates)
            for i, value in zip(todo, fresh, strict=True):
                self.cache.put(keys[i], "logprobs", value)
                out[i] = value
        return out  # type: ignore[return-value]
