"""The UI's static files: its own (``ui/static``) and Plotly's JS from the installed ``plotly``
wheel. Only files that exist in those two places are served (a fixed allow-list, so no path from
a request reaches the filesystem). Plotly's bundle carries map-tile, font and CDN addresses for
map traces the UI never draws; they are rewritten to an unfetchable ``blocked:`` scheme once at
start, so no served byte names an external address (XML namespace identifiers, which browsers
never fetch, stay). Every file is served with its content hash as ETag and may be cached."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}
# http(s) addresses that are not XML namespace identifiers (www.w3.org/1999/..., /2000/...)
EXTERNAL = re.compile(rb"https?://(?!www\.w3\.org/(?:1999|2000)/)")


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _asset(body: bytes, suffix: str) -> Asset:
    return Asset(body, TYPES.get(suffix, "application/octet-stream"), '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


def plotly_js() -> bytes:
    import plotly

    raw = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    return EXTERNAL.sub(b"blocked:", raw)


@functools.cache
def assets() -> dict[str, Asset]:
    """name -> asset, for every file the UI serves under /static/."""
    out = {}
    for entry in resources.files("interplab.ui").joinpath("static").iterdir():
        if entry.is_file() and Path(entry.name).suffix in TYPES:
            out[entry.name] = _asset(entry.read_bytes(), Path(entry.name).suffix)
    out["plotly.min.js"] = _asset(plotly_js(), ".js")
    return out
