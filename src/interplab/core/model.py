"""The ``Model`` protocol: what analyses need of a model.

``runtime.HookedModel`` implements it; so can a wrapper around any torch module. Analyses and
the runner type their ``model`` parameters with it instead of importing the runtime class, which
keeps the layers one-way and says what an analysis actually uses.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Model(Protocol):
    """What analyses need of a model (``runtime.HookedModel`` implements it; so can a wrapper
    around any torch module)."""

    tokenizer: Any
    dims: Any
    source: dict
    device: Any

    def run(self, inputs, interventions=(), **kw): ...

    def run_with_cache(self, inputs, sites, **kw): ...

    def gradients(self, inputs, metric, sites, **kw): ...

    def generate(self, prompt, max_new_tokens, interventions=(), **kw): ...
