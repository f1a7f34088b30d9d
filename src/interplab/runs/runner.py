"""The one runner: a registered analysis name and its config in, a run record and the result out.

``run_analysis`` loads the model once (only if the analysis asks for it), opens the run record
*before* the work starts (so ``started`` and the directory name are the start time), calls the
analysis, writes the result (``results.json`` with the headline numbers, ``results.safetensors``
with the tensors), renders its report and figures, closes the record atomically and tracks it
(MLflow / W&B when ``INTERPLAB_TRACKING`` asks). ``run_config_file`` does the same from a YAML /
JSON file naming ``analysis:`` and the fields; ``load_run`` reads a run record back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interplab.core.analysis import ANALYSES, Analysis, load_analyses
from interplab.core.blocks import Block
from interplab.core.config import build_config
from interplab.core.errors import ConfigError, InputError, did_you_mean
from interplab.core.result import Result, decode, encode
from interplab.core.threads import torch_threads
from interplab.runs.record import RunRecord

log = logging.getLogger(__name__)

# Names config files used before the registry gave each analysis one name.
ALIASES = {"patching": "patch", "ioi_demo": "demo", "causal_tracing": "trace", "path_patching": "path-patch",
           "attribution": "attribute", "train_sae": "train-sae", "eval_sae": "eval-sae"}


class _Context:
    """What an analysis function receives (``core.analysis.Context``)."""

    def __init__(self, config, model, progress: bool, phase: Callable[[str], None]) -> None:
        self._config, self._model = config, model
        self.progress, self.dir, self.log = progress, Path("."), log
        self._phase = phase

    @property
    def model(self):
        """The config's model (cfg.model, cfg.dtype, cfg.device), loaded once, on first use."""
        if self._model is None:
            cfg = self._config
            return self.load_model(dtype=getattr(cfg, "dtype", "float32"), device=getattr(cfg, "device", "cpu"))
        return self._model

    def load_model(self, dtype: str = "float32", device: str = "cpu"):
        """Load the config's model with this dtype / device (for analyses whose ``dtype`` field
        means something else, e.g. a store's dtype); it is then ``ctx.model`` and named in the
        record's provenance. ``device="auto"`` is CUDA when available."""
        if self._model is None:
            from interplab.runtime.loading import load

            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            self.phase(f"loading model {self._config.model}")
            self._model = load(self._config.model, dtype=dtype, device=device)
        return self._model

    @property
    def loaded_model(self):
        """The model if it has been loaded (None otherwise)."""
        return self._model

    def phase(self, text: str) -> None:
        self._phase(text)


@dataclass
class RunOutcome:
    analysis: str
    path: Path
    result: Result
    seconds: float

    def terminal(self) -> list[Block]:
        return self.result.terminal()


def analysis(name: str) -> Analysis:
    load_analyses()
    return ANALYSES.get(ALIASES.get(name, name))


def run_analysis(name: str, config=None, *, model=None, progress: bool = True,
                 phase: Callable[[str], None] | None = None, **fields) -> RunOutcome:
    """Run analysis ``name`` with ``config`` (or the config built from ``fields``).

    ``model`` is an already loaded model to use (a string is taken as the ``model`` field)."""
    if isinstance(model, str):
        fields["model"], model = model, None
    entry = analysis(name)
    if config is None:
        config = build_config(entry.config, fields, f"analysis {entry.name!r}")
    elif not isinstance(config, entry.config):
        raise ConfigError(f"Analysis {entry.name!r} takes a {entry.config.__name__}, got {type(config).__name__}.")
    t0 = time.perf_counter()
    say = phase or (lambda text: log.info("%s: %s", entry.name, text))
    # torch's thread count from the config's ``threads`` (RecordFields), for the run only.
    threads = getattr(config, "threads", None)
    with torch_threads(threads) if threads is not None else contextlib.nullcontext():
        result, path = _run(entry, config, model, progress, say)
    return RunOutcome(entry.name, path, result, time.perf_counter() - t0)


def _run(entry: Analysis, config, model, progress: bool, say: Callable[[str], None]) -> tuple[Result, Path]:
    ctx = _Context(config, model, progress, say)
    run_name = entry.run_name(config) if entry.run_name else entry.name
    with RunRecord(config.out, run_name, {"analysis": entry.name, **dataclasses.asdict(config)},
                   ctx.loaded_model, getattr(config, "seed", None)) as run:
        ctx.dir = run.path
        say(f"running {entry.name}")
        result = entry(config, ctx)
        if not isinstance(result, entry.result):
            raise TypeError(f"{entry.name} returned {type(result).__name__}, not {entry.result.__name__}")
        say("writing the run record")
        write_result(run, entry.name, result)
        from interplab.runs.render import render_report

        run.write_text("report.html", render_report(run, result.title(), result.blocks()))
        run.model = ctx.loaded_model  # a model loaded during the run is named in provenance too
    return result, run.final


def write_result(run: RunRecord, name: str, result) -> None:
    tensors: dict = {}
    tree = encode(result, tensors)
    run.set_results({"analysis": name, "headline": _plain(result.headline()), **tree}, tensors)


def _plain(data):
    return json.loads(json.dumps(data, default=float))


@dataclass
class LoadedRun:
    analysis: str
    config: Any
    result: Result
    provenance: dict
    path: Path


def load_run(path: str | Path) -> LoadedRun:
    """Read a run record back: its config (validated again) and its result, exactly."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
        tree = json.loads((path / "results.json").read_text())
        prov = json.loads((path / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path} is not a complete run record ({err}).") from None
    name = config.pop("analysis", None) or tree.get("analysis")
    entry = analysis(name)
    tensors = load_file(path / "results.safetensors") if (path / "results.safetensors").exists() else {}
    tree = {k: v for k, v in tree.items() if k not in ("analysis", "headline")}
    return LoadedRun(entry.name, build_config(entry.config, config, str(path / "config.json")),
                     decode(tree, tensors), prov, path)


def config_from_file(path: str | Path):
    """(analysis name, config) from a YAML / JSON file with an ``analysis:`` key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}).") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML / JSON: {problem}.") from None
    if not isinstance(data, dict) or "analysis" not in data:
        raise ConfigError(f"{path} must be a mapping with an 'analysis' key, e.g. 'analysis: patch'.")
    name = str(data.pop("analysis"))
    load_analyses()
    key = ALIASES.get(name, name)
    if key not in ANALYSES:
        raise ConfigError(f"Unknown analysis {name!r}.{did_you_mean(key, ANALYSES.names())} "
                          f"Valid: {', '.join(map(repr, ANALYSES.names()))}.")
    entry = ANALYSES.get(key)
    return entry.name, build_config(entry.config, data, str(path))


def run_config_file(path: str | Path, **kw) -> Path:
    name, config = config_from_file(path)
    return run_analysis(name, config, **kw).path
