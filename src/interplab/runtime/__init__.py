"""HookedModel: run, run_with_cache, gradients, generate, hook bookkeeping."""

from interplab.runtime.cache import ActivationCache
from interplab.runtime.context import CheckInfo, ForwardContext
from interplab.runtime.generate import GenerationResult
from interplab.runtime.generic import HookedModule, SiteSpec
from interplab.runtime.gradients import GradientResult
from interplab.runtime.hooked import HookedModel
from interplab.runtime.inputs import Batch

__all__ = [
    "ActivationCache", "Batch", "CheckInfo", "ForwardContext", "GenerationResult",
    "GradientResult", "HookedModel", "HookedModule", "SiteSpec",
]
