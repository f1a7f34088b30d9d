"""Intervention specs (JSON round trip) and their application, per batch row."""

import contextlib

from interplab.interventions.spec import (
    INTERVENTIONS,
    Ablate,
    Apply,
    Intervention,
    Patch,
    Steer,
    register_intervention,
)


@contextlib.contextmanager
def applied(model, interventions):
    """Attach interventions to a HookedModel for the body; all hooks go in ``finally``."""
    with model.attached(list(interventions)):
        yield model


def to_json(interventions) -> str:
    import json

    return json.dumps([i.to_dict() for i in interventions])


def from_json(text: str) -> list[Intervention]:
    from interplab.interventions.values import parse_json

    data = parse_json(text)
    return [Intervention.from_dict(d) for d in (data if isinstance(data, list) else [data])]


__all__ = [
    "INTERVENTIONS", "Ablate", "Apply", "Intervention", "Patch", "Steer", "applied",
    "from_json", "register_intervention", "to_json",
]
