"""One run record as the run page shows it: its config, provenance, headline numbers and report
blocks, read through ``runs.runner.load_run`` (the exact result, validated again), cached per
record until one of its files changes. A record that cannot be read is a page saying why."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

from interplab.core.errors import InterplabError
from interplab.ui.blocks_json import blocks_json, plain
from interplab.ui.paths import resolve_run, run_id
from interplab.ui.runs_index import _stamp, read_entry

CACHE_SIZE = 64


def build_view(root: Path, path: Path) -> dict:
    from interplab.runs.runner import load_run

    entry = read_entry(root, path)
    view = {"id": run_id(root, path), "entry": entry.public(), "files": _files(path)}
    if entry.status != "ok":
        return {**view, "status": entry.status, "problem": entry.problem}
    try:
        loaded = load_run(path)
        result = loaded.result
        blocks = result.blocks()
        title = result.title()
        headline = result.headline()
    except (InterplabError, OSError, ValueError, KeyError, TypeError) as err:
        return {**view, "status": "corrupt", "problem": f"the record does not read back: {err}"}
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    return {**view, "status": "ok", "analysis": loaded.analysis, "title": title, "config": plain(config),
            "provenance": plain(loaded.provenance), "headline": plain(headline), "blocks": blocks_json(blocks)}


def _files(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())[:200]


class RunViews:
    def __init__(self, root: Path):
        self.root = root
        self._cache: OrderedDict[Path, tuple[tuple, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, rid: str) -> dict:
        path = resolve_run(self.root, rid)
        stamp = _stamp(path)
        with self._lock:
            hit = self._cache.get(path)
            if hit is not None and hit[0] == stamp:
                self._cache.move_to_end(path)
                return hit[1]
        view = build_view(self.root, path)
        with self._lock:
            self._cache[path] = (stamp, view)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return view


def compare(a: dict, b: dict) -> dict:
    """Two run views side by side: every config key and headline number of either, and which differ."""
    def rows(x: dict, y: dict):
        keys = list(dict.fromkeys([*x, *y]))
        return [{"key": k, "a": x.get(k), "b": y.get(k), "differs": x.get(k) != y.get(k)} for k in keys]

    return {"a": a["id"], "b": b["id"], "analysis": [a.get("analysis"), b.get("analysis")],
            "config": rows(a.get("config") or {}, b.get("config") or {}),
            "headline": rows(a.get("headline") or {}, b.get("headline") or {})}
