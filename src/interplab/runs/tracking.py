"""Optional experiment tracking: MLflow or Weights & Biases, only when asked and installed.

Set ``INTERPLAB_TRACKING=mlflow`` or ``INTERPLAB_TRACKING=wandb`` (and the tool's own settings,
e.g. ``MLFLOW_TRACKING_URI`` or ``WANDB_MODE=offline``). By default nothing is logged anywhere
and nothing needs a network; a run record on disk is always written.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

from interplab.core.errors import MissingDependencyError

log = logging.getLogger(__name__)
BACKENDS = ("mlflow", "wandb")


def _flat(prefix: str, data, out: dict) -> dict:
    if isinstance(data, dict):
        for k, v in data.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = data
    return out


def track(run_dir: Path, backend: str | None = None) -> str | None:
    """Log a finished run record's config, numbers and files to the configured backend."""
    backend = backend or os.environ.get("INTERPLAB_TRACKING") or None
    if backend is None:
        return None
    if backend not in BACKENDS:
        raise MissingDependencyError(f"Unknown INTERPLAB_TRACKING {backend!r}; valid: {', '.join(BACKENDS)}.")
    try:
        module = importlib.import_module(backend)
    except ImportError as err:
        raise MissingDependencyError(
            f"INTERPLAB_TRACKING={backend} but {backend} is not installed; `pip install {backend}` "
            "or unset INTERPLAB_TRACKING."
        ) from err
    run_dir = Path(run_dir)
    config = _flat("", json.loads((run_dir / "config.json").read_text()), {})
    params = {k: str(v) for k, v in config.items()}
    if backend == "mlflow":
        with module.start_run(run_name=run_dir.name):
            module.log_params(params)
            module.log_artifacts(str(run_dir))
    else:
        run = module.init(name=run_dir.name, config=params)
        run.save(str(run_dir / "*"), base_path=str(run_dir))
        run.finish()
    log.info("Logged %s to %s", run_dir, backend)
    return backend
