"""Named artifacts a server loads once at startup: steering vectors, probes, dictionaries.

Each is a saved directory (``SteeringVector.save``, ``Probe.save``, ``Dictionary.save`` or a
SAELens / sparsify checkpoint for ``load_dictionary``); its name is the directory's name, or
the ``"name"`` string in its ``config.json`` when there is one. Requests refer to artifacts only
by these names, never by path. Every artifact is checked against the model when it loads (its
sites exist, its widths fit), so a request naming it cannot fail on shape later.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from interplab.analyses.probes import Probe
from interplab.analyses.steering import SteeringVector
from interplab.core.errors import InputError, InterplabError
from interplab.core.sites import Site
from interplab.dictionary.base import Dictionary
from interplab.dictionary.formats import load_dictionary

KINDS = ("vectors", "probes", "dictionaries")


def artifact_name(path: Path) -> str:
    """The ``"name"`` in ``config.json`` when it holds one, else the directory's name."""
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        meta = None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else path.resolve().name


def _width(model, site: Site) -> int:
    return math.prod(model.site_shape(site))


def _check_vector(model, name: str, vec: SteeringVector) -> None:
    vec.check(model)


def _check_probe(model, name: str, probe: Probe) -> None:
    if not probe.site:
        raise InputError(f"probe {name!r} has no site; fit it with ProbeConfig(site=...) so the server knows "
                         "where to read it.")
    site = model.site(probe.site)
    if _width(model, site) != probe.d:
        raise InputError(f"probe {name!r} has {probe.d} weights but its site {site} has "
                         f"{_width(model, site)} numbers per token on this model.")


def _check_dictionary(model, name: str, d: Dictionary) -> None:
    if not d.cfg.input_site:
        raise InputError(f"dictionary {name!r} does not record the site it reads; re-save it with "
                         "input_site set (or load it with load_dictionary(path, input_site=...)).")
    site = model.site(d.cfg.input_site)
    if _width(model, site) != d.cfg.d_in:
        raise InputError(f"dictionary {name!r} takes d_in={d.cfg.d_in} but its site {site} has "
                         f"{_width(model, site)} numbers per token on this model.")


_LOADERS = {
    "vectors": (SteeringVector.load, _check_vector),
    "probes": (Probe.load, _check_probe),
    "dictionaries": (lambda p: load_dictionary(p).eval(), _check_dictionary),
}


@dataclass
class Artifacts:
    """Loaded artifacts by kind and name (see the module docstring)."""

    vectors: dict[str, SteeringVector] = field(default_factory=dict)
    probes: dict[str, Probe] = field(default_factory=dict)
    dictionaries: dict[str, Dictionary] = field(default_factory=dict)
    paths: dict[str, dict[str, str]] = field(default_factory=lambda: {k: {} for k in KINDS})

    @classmethod
    def load(cls, model, vectors: Sequence = (), probes: Sequence = (), dictionaries: Sequence = ()) -> Artifacts:
        """Load every directory, name it and check it against ``model``; a name given twice
        within one kind is an error naming both directories."""
        out = cls()
        for kind, dirs in zip(KINDS, (vectors, probes, dictionaries)):
            if isinstance(dirs, (str, Path)):
                dirs = [dirs]
            load, check = _LOADERS[kind]
            table = getattr(out, kind)
            for d in dirs:
                path = Path(d)
                if not path.is_dir():
                    raise InputError(f"--{kind} {path}: not a directory; each artifact is a saved directory.")
                name = artifact_name(path)
                if name in table:
                    raise InputError(f"--{kind}: the name {name!r} is given twice ({out.paths[kind][name]} and "
                                     f"{path}); rename one directory (or its config.json \"name\").")
                try:
                    obj = load(path)
                    check(model, name, obj)
                except InterplabError as e:
                    raise type(e)(f"--{kind} {path}: {e}") from None
                table[name] = obj
                out.paths[kind][name] = str(path)
        return out

    def names(self) -> dict[str, list[str]]:
        return {kind: sorted(getattr(self, kind)) for kind in KINDS}

    def get(self, kind: str, name, where: str):
        """The artifact ``name`` of ``kind``, or an InputError at field path ``where`` listing
        the registered names."""
        table = getattr(self, kind)
        if not isinstance(name, str) or name not in table:
            what = {"vectors": "vector", "probes": "probe", "dictionaries": "dictionary"}[kind]
            known = ", ".join(sorted(table)) or "none (start the server with --" + kind + " DIR)"
            raise InputError(f"{where}: unknown {what} {name!r}; registered: {known}.")
        return table[name]
