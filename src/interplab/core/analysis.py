"""The analysis registry: every analysis registered once, at its definition.

An entry is (name, config dataclass, function, result type). The function takes the config
and a ``Context`` (the model, loaded once and only when asked for; the run directory for
artifacts; whether to show progress) and returns an instance of the result type. The runner
(``interplab.runs.runner``), the CLI, config files, the server and the UI all enumerate
``ANALYSES`` and treat every entry the same way::

    @register_analysis("heads", config=HeadsRunConfig, result=HeadScores,
                       help="previous-token / duplicate / induction head scores")
    def heads(cfg: HeadsRunConfig, ctx: Context) -> HeadScores:
        return detect_heads(ctx.model, cfg)

``ANALYSES`` is filled by importing the modules that define analyses. They are found by name:
every module ``*_run.py`` under ``interplab`` (outside ``runs/``, which holds the runner) is
imported by ``load_analyses()``, so adding an analysis means adding one such file.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from interplab.core.model import Model
from interplab.core.registry import Registry

__all__ = ["ANALYSES", "Analysis", "Context", "Model", "analysis_modules", "load_analyses", "register_analysis"]



class Context(Protocol):
    """What the runner hands an analysis function."""

    @property
    def model(self) -> Model: ...

    def load_model(self, dtype: str = "float32", device: str = "cpu") -> Model: ...

    def phase(self, text: str) -> None: ...

    dir: Path  # the run directory being written (artifacts such as probe/ go here)
    progress: bool
    log: logging.Logger


@dataclass(frozen=True)
class Analysis:
    name: str
    config: type
    fn: Callable[[Any, Context], Any]
    result: type
    help: str
    needs_model: bool = True
    run_name: Callable[[Any], str] | None = None  # the run directory's name (default: the analysis name)
    # Fields for a small run on a tiny model (the conformance test runs every analysis with
    # them); "{corpus}", "{store}", "{dictionary}" and "{tmp}" are filled in by the test.
    example: dict = field(default_factory=dict)

    def __call__(self, config, ctx: Context):
        return self.fn(config, ctx)


ANALYSES: Registry[Analysis] = Registry("analysis")


def register_analysis(name: str, *, config: type, result: type, help: str, needs_model: bool = True,
                      run_name: Callable[[Any], str] | None = None, example: dict | None = None) -> Callable:
    """Register the decorated function as analysis ``name`` (CLI subcommand and config-file
    name alike)."""

    def decorate(fn: Callable) -> Callable:
        ANALYSES.register(name)(Analysis(name, config, fn, result, help, needs_model, run_name, dict(example or {})))
        fn.analysis_name = name
        return fn

    return decorate


@functools.cache
def analysis_modules() -> tuple[str, ...]:
    """Module names of the files that define analyses (``*_run.py``), found without importing."""
    root = Path(__file__).resolve().parent.parent
    names = []
    for path in sorted(root.rglob("*_run.py")):
        rel = path.relative_to(root).with_suffix("")
        if rel.parts[0] != "runs":
            names.append(".".join(("interplab", *rel.parts)))
    return tuple(names)


def load_analyses() -> Registry[Analysis]:
    """Import every module that registers analyses; return the filled registry."""
    for module in analysis_modules():
        importlib.import_module(module)
    return ANALYSES
