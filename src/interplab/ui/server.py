"""``interplab ui``: find the feature dashboards, start the live model loading in the background,
and run the app on uvicorn, printing the URL as soon as the socket listens (in a few seconds:
the model is not waited for)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from interplab.core.errors import ConfigError
from interplab.serve.server import listen, url_of
from interplab.ui.settings import UiSettings


@dataclass(frozen=True)
class UiOptions:
    runs_dir: str = "runs"
    host: str = "127.0.0.1"
    port: int = 8400
    model: str | None = "smollm2-135m"  # None: no live pages
    vectors: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    dictionaries: tuple[str, ...] = ()
    settings: UiSettings = field(default_factory=UiSettings)
    open_browser: bool = False


def locate(runs_dir: str | Path) -> tuple[Path, str | None]:
    """(the runs root, the run to open first): RUNS_DIR may be one run record itself."""
    path = Path(runs_dir)
    if (path / "config.json").is_file() and (path / "provenance.json").is_file():
        return path.parent, path.name
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is not a directory of run records.")
    return path, None


def latest_run(index):
    """The most recently started complete run, or None."""
    done = [e for e in index.entries() if e.status == "ok" and e.started]
    return max(done, key=lambda e: e.started, default=None)


def build(options: UiOptions):
    from interplab.ui.app import create_ui_app
    from interplab.ui.features import Features

    root, first = locate(options.runs_dir)
    features = Features.discover(root, options.dictionaries)
    live = None
    if options.model is not None:
        from interplab.ui.live import Live

        live = Live.start(options.model, vectors=options.vectors, probes=options.probes,
                          dictionaries=options.dictionaries, settings=options.settings)
    return create_ui_app(root, options.settings, features=features, live=live), first, live


def run_ui(options: UiOptions, out=sys.stdout) -> None:
    import uvicorn

    app, first, live = build(options)
    sock = listen(options.host, options.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    base = url_of(sock, options.host)

    def link(path: str) -> str:
        if options.settings.token:
            path += ("&" if "?" in path else "?") + "token=" + quote(options.settings.token, safe="")
        return base + path

    print(f"interplab ui: {link('/run?id=' + quote(first, safe='') if first else '/')}", file=out, flush=True)
    if first is None:
        latest = latest_run(app.state.index)
        if latest is not None:
            print(f"latest run ({latest.analysis}, {latest.id}): {link('/run?id=' + quote(latest.id, safe=''))}",
                  file=out, flush=True)
    if options.open_browser:
        import webbrowser

        webbrowser.open(link("/"))
    try:
        server.run(sockets=[sock])
    finally:
        if live is not None:
            live.close()
        sock.close()
