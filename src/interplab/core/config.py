"""Config base: frozen dataclasses whose fields carry their own help text.

``param(default, "help")`` declares a field; the CLI is generated from the fields
(``interplab.cli.args``), cross-field checks live in ``__post_init__``, and nothing mutates a
config after construction.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def param(default: Any = dataclasses.MISSING, help: str = "", **kw) -> Any:
    """A config field with its docstring (shown by ``--help``)."""
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
