"""``interplab.return`` of a request: which internals to send back (see ``serve.specs``).

Each section is checked against the model and the registered artifacts before any work, and
adds the sites it needs to the request's capture list (each site once, in order).
"""

from __future__ import annotations

from dataclasses import dataclass

from interplab.core.errors import InputError, InterplabError, choices
from interplab.core.sites import Site, SiteKind
from interplab.interventions.values import as_indices
from interplab.serve.spec_interventions import parse_site
from interplab.serve.tensors import FORMATS

SECTIONS = ("activations", "features", "probes", "logit_lens")
POSITION_WORDS = ("prompt", "generated", "all")
REDUCE = ("none", "mean", "last")
MAX_K = 100
MAX_SITES = 64
LENS_KINDS = frozenset({SiteKind.EMBED, SiteKind.RESID_PRE, SiteKind.RESID_MID, SiteKind.RESID_POST,
                        SiteKind.ATTN_OUT, SiteKind.MLP_OUT})  # not ln_final: it is already normed


@dataclass(frozen=True)
class ActivationsReturn:
    sites: tuple[Site, ...]
    positions: str | tuple[int, ...] = "all"
    reduce: str = "none"
    format: str = "json"


@dataclass(frozen=True)
class FeaturesReturn:
    dictionary: str
    site: Site
    k: int = 5
    positions: str | tuple[int, ...] = "all"


@dataclass(frozen=True)
class LensReturn:
    sites: tuple[Site, ...]
    k: int = 5
    positions: str | tuple[int, ...] = "all"


def _object(value, where: str, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where}: must be an object with fields {choices(keys)}, got {type(value).__name__}.")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}: unknown field; valid: {choices(keys)}.")
    return value


def _choice(value, where: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise InputError(f"{where}: {value!r} is not one of {choices(options)}.")
    return value


def _positions(value, where: str, model) -> str | tuple[int, ...]:
    if isinstance(value, str):
        return _choice(value, where, POSITION_WORDS)
    if not isinstance(value, list):
        raise InputError(f"{where}: give {choices(POSITION_WORDS)} or a list of token positions.")
    try:
        pos = as_indices(value, where)
    except InterplabError as e:
        raise InputError(str(e)) from None
    limit = model.max_positions
    bad = [p for p in pos if limit and not -limit <= p < limit]
    if bad:
        raise InputError(f"{where}: positions {bad} are beyond the model's {limit} positions.")
    return pos


def _k(value, where: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= min(top, MAX_K):
        raise InputError(f"{where}: k must be an integer in 1..{min(top, MAX_K)}, got {value!r}.")
    return value


def _sites(value, where: str, model) -> tuple[Site, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: give a non-empty list of sites, e.g. [\"L0.resid_post\"].")
    if len(value) > MAX_SITES:
        raise InputError(f"{where}: {len(value)} sites, more than the limit of {MAX_SITES}.")
    out = []
    for i, s in enumerate(value):
        site = parse_site(model, s, f"{where}[{i}]")
        if site.kind == SiteKind.PATTERN:
            raise InputError(f"{where}[{i}]: {site} holds attention probabilities, not one vector per token; "
                             "ask for attn.z, attn.q/k/v or a residual site.")
        out.append(site)
    return tuple(out)


def parse_return(body, model, artifacts) -> dict:
    """The parsed sections (None / [] where absent) and ``capture``, the sites they need."""
    where = "interplab.return"
    out = {"activations": None, "features": [], "probes": [], "logit_lens": None, "capture": []}
    if body is None:
        return out
    body = _object(body, where, SECTIONS)
    capture: list[Site] = []
    if body.get("activations") is not None:
        at = f"{where}.activations"
        a = _object(body["activations"], at, ("sites", "positions", "reduce", "format"))
        out["activations"] = ActivationsReturn(
            _sites(a.get("sites"), f"{at}.sites", model), _positions(a.get("positions", "all"), f"{at}.positions", model),
            _choice(a.get("reduce", "none"), f"{at}.reduce", REDUCE), _choice(a.get("format", "json"), f"{at}.format", FORMATS))
        capture += out["activations"].sites
    features = body.get("features")
    for i, f in enumerate([features] if isinstance(features, dict) else features or []):
        at = f"{where}.features" + (f"[{i}]" if isinstance(features, list) else "")
        f = _object(f, at, ("dictionary", "k", "positions"))
        d = artifacts.get("dictionaries", f.get("dictionary"), f"{at}.dictionary")
        site = model.site(d.cfg.input_site)
        out["features"].append(FeaturesReturn(f["dictionary"], site, _k(f.get("k", 5), f"{at}.k", d.cfg.d_sae),
                                              _positions(f.get("positions", "all"), f"{at}.positions", model)))
        capture.append(site)
    probes = body.get("probes")
    if probes is not None:
        if isinstance(probes, str):
            probes = [probes]
        if not isinstance(probes, list):
            raise InputError(f"{where}.probes: give a list of registered probe names.")
        for i, name in enumerate(probes):
            probe = artifacts.get("probes", name, f"{where}.probes[{i}]")
            out["probes"].append(name)
            capture.append(model.site(probe.site))
    if body.get("logit_lens") is not None:
        at = f"{where}.logit_lens"
        lens = _object(body["logit_lens"], at, ("sites", "k", "positions"))
        sites = _sites(lens.get("sites"), f"{at}.sites", model)
        for i, site in enumerate(sites):
            if site.kind not in LENS_KINDS or site.head is not None:
                raise InputError(f"{at}.sites[{i}]: the logit lens reads the residual stream (d_model wide); "
                                 f"{site} is not. Valid kinds: {choices(sorted(k.value for k in LENS_KINDS))}.")
        out["logit_lens"] = LensReturn(sites, _k(lens.get("k", 5), f"{at}.k", model.dims.d_vocab),
                                       _positions(lens.get("positions", "all"), f"{at}.positions", model))
        capture += sites
    out["capture"] = list(dict.fromkeys(capture))
    return out
