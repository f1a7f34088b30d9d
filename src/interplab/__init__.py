"""interplab: exact, fast, honest mechanistic interpretability on Hugging Face models."""

__version__ = "0.1.0"

from interplab.core.sites import Site, SiteKind
from interplab.interventions import Ablate, Apply, Patch, Steer, applied
from interplab.runtime.hooked import HookedModel
from interplab.runtime.loading import load

__all__ = [
    "Ablate", "Apply", "HookedModel", "Patch", "Site", "SiteKind", "Steer", "__version__",
    "applied", "load",
]
