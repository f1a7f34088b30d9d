"""interplab's exception hierarchy.

Every error a user can trigger is an ``InterplabError`` whose message says what happened,
why, how to fix it and, where there is a closed set, the valid choices (DESIGN rule 10).
"""

from __future__ import annotations


class InterplabError(Exception):
    """Base class of every error interplab raises on purpose."""


class SiteError(InterplabError, KeyError):
    """An activation site that does not exist on this model (bad name, layer or head)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnsupportedArchitectureError(InterplabError):
    """The model family, or a config key of it, is not one interplab understands."""


class ModelNotFoundError(InterplabError):
    """A model name that is neither a default, a local path nor a loadable hub id."""


class MissingDependencyError(InterplabError, ImportError):
    """An optional package needed for this call is not installed."""


class InterventionError(InterplabError, ValueError):
    """An intervention that cannot be applied as asked (shape, op, rows, read-only site)."""


class PositionError(InterplabError, IndexError):
    """A position or row index outside the prompts it was meant for."""


class InputError(InterplabError, ValueError):
    """Inputs the runtime cannot run: empty prompt lists, ragged tensors, bad dtypes."""


class ConfigError(InterplabError, ValueError):
    """A config whose fields are out of range or inconsistent with each other."""


def choices(values) -> str:
    """Format a closed set of valid choices for an error message."""
    return ", ".join(repr(v) for v in values)


def closest(word, options) -> str | None:
    """The option closest to a mistyped ``word`` (None when nothing is close, or it is exact)."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return close[0] if close and close[0] != word else None


def did_you_mean(word, options) -> str:
    """`` Did you mean 'x'?`` for the closest option to ``word``, or ""."""
    close = closest(word, options)
    return f" Did you mean {close!r}?" if close else ""
