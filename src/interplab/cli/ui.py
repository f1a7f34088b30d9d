"""``interplab ui``: its options, and the call into ``interplab.ui.server`` (imported only when
the command runs, so ``interplab --help`` stays fast and torch-free)."""

from __future__ import annotations

import argparse
import os

HELP = "look at run records, feature dashboards and a live model in the browser (local web app)"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("ui", help=HELP, description=HELP + ". Prints its URL (and the latest run's) when ready; "
                       "Ctrl-C stops it. RUNS_DIR may also be one run record: the URL then opens that run.")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="directory of run records, searched 3 levels deep (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; any other "
                   "address needs --token)")
    p.add_argument("--port", type=int, default=8400, help="port (default: 8400; 0: a free port)")
    p.add_argument("--token", default=None, help="access token (default: $INTERPLAB_TOKEN); the printed URL carries it")
    p.add_argument("--model", default="smollm2-135m", help="model of the live pages (prompt explorer, steering "
                   "playground), loaded in the background after the UI starts (default: smollm2-135m)")
    p.add_argument("--open", action="store_true", help="open the index in the system's web browser")
    p.add_argument("--no-live", action="store_true", help="no live model: runs and feature dashboards only")
    p.add_argument("--vectors", nargs="+", default=[], metavar="DIR",
                   help="saved steering vectors (interplab steer's vector/ directories) for the playground")
    p.add_argument("--probes", nargs="+", default=[], metavar="DIR", help="saved probes, scored in the playground")
    p.add_argument("--dictionaries", nargs="+", default=[], metavar="DIR",
                   help="trained dictionaries: their feature dashboards (from DIR/features, written by eval-sae) "
                        "and their latents as steering directions")
    return p


def run(args: argparse.Namespace) -> int:
    from interplab.serve.security import check_bind
    from interplab.ui.server import UiOptions, run_ui
    from interplab.ui.settings import UiSettings

    token = args.token or os.environ.get("INTERPLAB_TOKEN") or None
    check_bind(args.host, token)  # refuse before anything loads
    opts = UiOptions(runs_dir=args.runs_dir, host=args.host, port=args.port, model=None if args.no_live else args.model,
                     vectors=tuple(args.vectors), probes=tuple(args.probes), dictionaries=tuple(args.dictionaries),
                     settings=UiSettings(token=token), open_browser=args.open)
    try:
        run_ui(opts)
    except KeyboardInterrupt:
        pass
    return 0
