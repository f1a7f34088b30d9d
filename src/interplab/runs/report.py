"""A self-contained HTML report: sections of text, tables and figures (relative links)."""

from __future__ import annotations

import html

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left} img{max-width:100%}
.note{color:#555;font-size:.9em}
"""


class Report:
    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def text(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def figure(self, rel_path: str, caption: str = "") -> None:
        self.parts.append(
            f'<figure><img src="{html.escape(rel_path)}" alt="{html.escape(caption)}">'
            f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>'
        )

    def table(self, header: list[str], rows: list[list]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in r) + "</tr>" for r in rows
        )
        self.parts.append(f"<table><tr>{head}</tr>{body}</table>")

    def render(self) -> str:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
            + "\n".join(self.parts) + "</body></html>"
        )


def fmt(c) -> str:
    if c is None:
        return "—"
    if isinstance(c, float):
        return f"{c:.3g}" if c != 0 and abs(c) < 1e-3 else f"{c:.3f}"
    return str(c)
