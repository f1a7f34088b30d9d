"""Ground floor: sites, dimensions, errors, registries, configs. Imports nothing of ours."""

from interplab.core.errors import (
    ConfigError,
    InputError,
    InterplabError,
    InterventionError,
    MissingDependencyError,
    ModelNotFoundError,
    PositionError,
    SiteError,
    UnsupportedArchitectureError,
)
from interplab.core.sites import Site, SiteKind

__all__ = [
    "ConfigError",
    "InputError",
    "InterplabError",
    "InterventionError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "PositionError",
    "Site",
    "SiteError",
    "SiteKind",
    "UnsupportedArchitectureError",
]
