"""interplab: exact, fast, honest mechanistic interpretability on Hugging Face models.

The public names below are imported lazily (PEP 562), so ``import interplab.core`` — and the
CLI's ``--help`` — do not pay for torch and transformers.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "Site": "interplab.core.sites", "SiteKind": "interplab.core.sites",
    "Ablate": "interplab.interventions", "Apply": "interplab.interventions", "Patch": "interplab.interventions",
    "Steer": "interplab.interventions", "applied": "interplab.interventions",
    "HookedModel": "interplab.runtime.hooked", "load": "interplab.runtime.loading",
    "run_analysis": "interplab.runs.runner", "load_run": "interplab.runs.runner",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'interplab' has no attribute {name!r}")
