"""``interplab serve``: load the model and the named artifacts, start the engine, and run the app
on uvicorn, printing the URL once the socket is listening."""

from __future__ import annotations

import logging
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from interplab.serve.security import check_bind
from interplab.serve.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    """What the command line gives ``serve``."""

    model: str = "smollm2-135m"
    host: str = "127.0.0.1"
    port: int = 8000
    vectors: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    dictionaries: tuple[str, ...] = ()
    max_batch: int = 32
    max_queue: int = 256
    settings: Settings = field(default_factory=Settings)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the URL printed is the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it (Linux): a response's header and body writes go out at once
    # instead of the body waiting ~40 ms for the client's delayed ACK on a kept-alive connection.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}"


def build(options: ServeOptions):
    """(app, engine): the model, artifacts and engine behind a new app."""
    from interplab.runtime.loading import load
    from interplab.serve.app import create_app
    from interplab.serve.engine import Engine
    from interplab.serve.specs import Artifacts

    model = load(options.model)
    artifacts = Artifacts.load(model, vectors=list(options.vectors), probes=list(options.probes),
                               dictionaries=list(options.dictionaries))
    engine = Engine(model, max_batch=options.max_batch, max_queue=options.max_queue)
    return create_app(model, engine, artifacts, options.settings), engine


def serve(options: ServeOptions, out=sys.stdout) -> None:
    """Run until interrupted (Ctrl-C)."""
    import uvicorn

    check_bind(options.host, options.settings.token)  # before loading anything
    Path(options.settings.runs_dir).mkdir(parents=True, exist_ok=True)
    app, engine = build(options)
    sock = listen(options.host, options.port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    url = url_of(sock, options.host)
    print(f"interplab serve: {options.model} at {url}/v1 (docs: {url}/docs; "
          f"token {'required' if options.settings.token else 'off'})", file=out, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
