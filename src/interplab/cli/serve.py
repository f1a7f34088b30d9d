"""``interplab serve``: its options, and the call into ``interplab.serve.server`` (imported only
when the command runs, so ``interplab --help`` stays fast and torch-free)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "serve a model over an OpenAI-compatible HTTP API with per-request interventions and internals"


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help=HELP, description=HELP + ". Prints its URL when ready; Ctrl-C stops it.")
    p.add_argument("--model", default="smollm2-135m", help="model name, local directory, GGUF file or hub id "
                   "(default: smollm2-135m)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; any other "
                   "address needs --token)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: a free port)")
    p.add_argument("--token", default=None, help="bearer token clients must send (default: $INTERPLAB_TOKEN)")
    for kind in ("vectors", "probes", "dictionaries"):
        p.add_argument(f"--{kind}", nargs="+", default=[], metavar="DIR",
                       help=f"saved {kind} directories, registered by name for requests to use")
    p.add_argument("--max-batch", type=positive, default=32, help="most requests per decode step (default: 32)")
    p.add_argument("--max-queue", type=positive, default=256, help="most waiting requests; more get 429 (default: 256)")
    p.add_argument("--max-new-tokens", type=positive, default=512, help="cap on max_tokens (default: 512)")
    p.add_argument("--max-prompt-tokens", type=positive, default=4096, help="cap on a prompt's tokens (default: 4096)")
    p.add_argument("--max-body-bytes", type=positive, default=1 << 20, help="cap on a request body (default: 1 MiB)")
    p.add_argument("--max-interventions", type=positive, default=16,
                   help="cap on interventions per request (default: 16)")
    p.add_argument("--runs-dir", default="runs/serve", help="where analysis jobs write their run records "
                   "(default: runs/serve)")
    return p


def options(args: argparse.Namespace):
    from interplab.serve.server import ServeOptions
    from interplab.serve.settings import Settings

    token = args.token or os.environ.get("INTERPLAB_TOKEN") or None
    settings = Settings(model_name=args.model, token=token, max_new_tokens=args.max_new_tokens,
                        max_prompt_tokens=args.max_prompt_tokens, max_body_bytes=args.max_body_bytes,
                        max_interventions=args.max_interventions, runs_dir=Path(args.runs_dir))
    return ServeOptions(model=args.model, host=args.host, port=args.port, vectors=tuple(args.vectors),
                        probes=tuple(args.probes), dictionaries=tuple(args.dictionaries),
                        max_batch=args.max_batch, max_queue=args.max_queue, settings=settings)


def run(args: argparse.Namespace) -> int:
    from interplab.serve.security import check_bind
    from interplab.serve.server import serve

    opts = options(args)
    check_bind(opts.host, opts.settings.token)  # refuse before the model loads
    try:
        serve(opts)
    except KeyboardInterrupt:
        pass
    return 0
