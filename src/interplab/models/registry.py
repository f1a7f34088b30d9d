"""The adapter registry: ``@register_adapter`` at each family's definition."""

from __future__ import annotations

from interplab.core.errors import UnsupportedArchitectureError, choices
from interplab.core.registry import Registry
from interplab.models.adapter import Adapter

ADAPTERS: Registry[type[Adapter]] = Registry("model adapter")


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: register an adapter under its ``name``."""
    assert cls.name and cls.model_types, f"{cls.__name__} needs a name and model_types"
    return ADAPTERS.register(cls.name)(cls)


def supported_model_types() -> list[str]:
    return sorted(t for _, cls in ADAPTERS.items() for t in cls.model_types)


def adapter_class_for(config) -> type[Adapter]:
    """The adapter class for an HF config, or a clear error naming the supported families."""
    model_type = getattr(config, "model_type", None)
    for _, cls in ADAPTERS.items():
        if model_type in cls.model_types:
            return cls
    raise UnsupportedArchitectureError(
        f"interplab has no adapter for model_type {model_type!r}. Supported model types: "
        f"{choices(supported_model_types())}. Adding a family is one file in "
        "src/interplab/models/ with @register_adapter."
    )


def adapter_for(model) -> Adapter:
    return adapter_class_for(model.config)(model)
