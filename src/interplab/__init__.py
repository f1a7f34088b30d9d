"""interplab: exact, fast, honest mechanistic interpretability on Hugging Face models."""

__version__ = "0.1.0"

from interplab.core.sites import Site, SiteKind  # noqa: E402
from interplab.interventions import Ablate, Apply, Patch, Steer, applied  # noqa: E402
from interplab.runtime.hooked import HookedModel  # noqa: E402
from interplab.runtime.loading import load  # noqa: E402

__all__ = [
    "Ablate", "Apply", "HookedModel", "Patch", "Site", "SiteKind", "Steer", "__version__",
    "applied", "load",
]
