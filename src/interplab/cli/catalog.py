"""What the CLI needs to know about every registered analysis — name, help, positional fields
and each config field as data (``cli.args.field_specs``) — cached so ``interplab --help``,
``interplab NAME --help`` and a mistyped subcommand or option answer without importing torch
(~5 s here).

The cache is derived from the registry, never edited by hand: it lives in
``$INTERPLAB_HOME/cli-catalog-<key>.json``, where the key hashes the path, size and mtime of every
source file of the package, so any change to the code makes a new one on the next call.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _key() -> str:
    h = hashlib.sha256()
    for path in sorted(ROOT.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(ROOT)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _home() -> Path:
    return Path(os.environ.get("INTERPLAB_HOME", Path.home() / ".cache" / "interplab"))


def describe() -> dict[str, dict]:
    """{name: {"help", "description", "positional", "fields"}} from the registry (imports it)."""
    from interplab.cli.args import field_specs
    from interplab.core.analysis import load_analyses

    return {name: {"help": entry.help,
                   "description": f"{entry.help}. {entry.config.__doc__ or ''}".strip(),
                   "positional": list(getattr(entry.config, "positional", ())),
                   "fields": field_specs(entry.config)}
            for name, entry in load_analyses().items()}


def catalog() -> dict[str, dict]:
    """The description of every analysis, from the cache or (once) from the registry."""
    path = _home() / f"cli-catalog-{_key()}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    data = describe()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs speed
    return data
