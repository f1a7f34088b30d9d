"""Terminal rendering for the CLI (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_models(rows, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="interplab models")
    for col in ("name", "description", "installed", "cached (safetensors)", "path / install"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["description"], "yes" if r["installed"] else "no",
                      "yes" if r["cached"] else "no", r.get("path") or r.get("install", ""))
    console.print(table)
