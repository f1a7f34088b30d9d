"""The index of run records under RUNS_DIR: every run directory to a depth of 3 (``is_record``),
with its analysis, model, date, headline numbers and whether it is complete.
A record that is missing a file or holds corrupt JSON is listed with its status and the reason,
never hidden and never breaking the rest. Entries are cached per directory and re-read when a
file's modification time changes, so a refresh after a new run costs one directory scan."""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from interplab.ui.blocks_json import plain
from interplab.ui.paths import run_id

FILES = ("config.json", "results.json", "provenance.json")
MAX_DEPTH = 3
SORTS = ("started", "analysis", "model", "id", "status")


@dataclass
class Entry:
    id: str
    analysis: str = ""
    model: str = ""
    started: str = ""
    ended: str = ""
    status: str = "ok"  # ok | incomplete | corrupt
    problem: str = ""
    headline: dict = field(default_factory=dict)
    title: str = ""

    def public(self) -> dict:
        return asdict(self)

    def matches(self, q: str) -> bool:
        q = q.lower()
        return any(q in str(v).lower() for v in (self.id, self.analysis, self.model, self.title, self.started))


def _read(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def read_entry(root: Path, path: Path) -> Entry:
    entry = Entry(run_id(root, path))
    try:
        config = _read(path / "config.json")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return Entry(entry.id, status="corrupt", problem=f"config.json unreadable: {err}")
    entry.analysis = str(config.get("analysis") or "")
    entry.model = str(config.get("model") or "")
    missing = [name for name in FILES[1:] if not (path / name).is_file()]
    if missing:
        entry.status, entry.problem = "incomplete", f"missing {', '.join(missing)}"
        return entry
    try:
        results, prov = _read(path / "results.json"), _read(path / "provenance.json")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        entry.status, entry.problem = "corrupt", f"unreadable record: {err}"
        return entry
    entry.analysis = entry.analysis or str(results.get("analysis") or "")
    entry.headline = plain(results.get("headline") or {})
    entry.started, entry.ended = str(prov.get("started") or ""), str(prov.get("ended") or "")
    if prov.get("model"):  # the model the run loaded (a config may name none or an alias)
        entry.model = str(prov["model"])
    return entry


RECORD_NAME = re.compile(r".+-\d{8}-\d{6}(-\d+)?$")  # what RunRecord names a run: NAME-YYYYMMDD-HHMMSS[-n]


def is_record(path: Path) -> bool:
    """A run record, complete or not: a config.json beside a results.json, or in a directory
    named as the runner names runs, or naming its analysis. Other directories with a config.json
    (dictionaries, stores and feature statistics: config + provenance) are not runs."""
    if not (path / "config.json").is_file():
        return False
    if (path / "results.json").is_file() or RECORD_NAME.match(path.name):
        return True
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "analysis" in config


def _stamp(path: Path) -> tuple:
    out = []
    for name in FILES:
        try:
            st = os.stat(path / name)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class RunIndex:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._cache: dict[Path, tuple[tuple, Entry]] = {}
        self._lock = threading.Lock()

    def _dirs(self):
        def walk(d: Path, depth: int):
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                return
            for child in children:
                if is_record(child):
                    yield child
                elif depth < MAX_DEPTH:
                    yield from walk(child, depth + 1)

        if self.root.is_dir():
            yield from walk(self.root, 1)

    def entries(self) -> list[Entry]:
        with self._lock:
            seen, out = set(), []
            for path in self._dirs():
                seen.add(path)
                stamp = _stamp(path)
                cached = self._cache.get(path)
                if cached is None or cached[0] != stamp:
                    cached = (stamp, read_entry(self.root, path))
                    self._cache[path] = cached
                out.append(cached[1])
            for gone in set(self._cache) - seen:
                del self._cache[gone]
            return out

    def query(self, q: str = "", analysis: str = "", sort: str = "started", descending: bool = True,
              offset: int = 0, limit: int = 100) -> dict:
        rows = self.entries()
        analyses = sorted({e.analysis for e in rows if e.analysis})
        if analysis:
            rows = [e for e in rows if e.analysis == analysis]
        if q:
            rows = [e for e in rows if e.matches(q)]
        rows.sort(key=lambda e: (str(getattr(e, sort)), e.id), reverse=descending)
        return {"total": len(rows), "offset": offset, "limit": limit, "analyses": analyses,
                "runs": [e.public() for e in rows[offset: offset + limit]]}
