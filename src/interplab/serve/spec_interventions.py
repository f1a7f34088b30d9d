"""``interplab.interventions`` of a request: JSON specs to intervention objects, every error
naming its field path (``interplab.interventions[1].vector_name: ...``).

Accepted per item: the library's specs (``Intervention.from_dict``: patch, ablate, steer) with
tensors in any encoding ``serve.tensors`` reads; a registered steering vector
``{"op": "steer", "vector_name": NAME, "scale": s, "site"?: ..., "positions"?: [...]}``; and a
feature clamp ``{"op": "clamp_feature", "dictionary": NAME, "latent": i, "value": v,
"positions"?: [...]}``. Refused: ``apply`` and any field that would carry code, and ``rows``
(a request owns exactly its own batch row; the engine binds it).
"""

from __future__ import annotations

from interplab.analyses.steering import SteeringVector
from interplab.core.errors import InputError, InterplabError, choices
from interplab.core.sites import Site, SiteKind
from interplab.dictionary.clamp import ClampFeature
from interplab.interventions.spec import INTERVENTIONS, Intervention
from interplab.interventions.values import as_index, as_indices, finite_scale
from interplab.serve.tensors import decode_value

CODE_FIELDS = ("fn", "code", "callable", "function", "source", "python", "module", "class", "pickle")
OPS = ("patch", "ablate", "steer", "clamp_feature")


def site_dims(model, site: Site) -> str:
    """A site's per-token shape in the house's dimension names, e.g. ``d_model=64``."""
    d, k = model.dims, site.kind
    if k in (SiteKind.Q, SiteKind.Z, SiteKind.K, SiteKind.V):
        heads = ("n_kv_heads", d.n_kv_heads) if k in (SiteKind.K, SiteKind.V) else ("n_heads", d.n_heads)
        names = [("d_head", d.d_head)] if site.head is not None else [heads, ("d_head", d.d_head)]
    elif k == SiteKind.MLP_HIDDEN:
        names = [("d_mlp", d.d_mlp)]
    elif k == SiteKind.LOGITS:
        names = [("d_vocab", d.d_vocab)]
    elif k == SiteKind.PATTERN:
        names = [] if site.head is not None else [("n_heads", d.n_heads)]
    else:
        names = [("d_model", d.d_model)]
    return ", ".join(f"{n}={v}" for n, v in names)


def parse_site(model, value, where: str) -> Site:
    try:
        return model.site(value)
    except InterplabError as e:
        raise InputError(f"{where}: {e}") from None


def check_width(model, tensor, site: Site, where: str, what: str = "has") -> None:
    """The trailing axes of ``tensor`` must be the site's per-token shape."""
    shape = tuple(model.site_shape(site))
    if tuple(tensor.shape[tensor.ndim - len(shape):]) != shape or tensor.ndim < len(shape):
        given = f"{tensor.shape[-1]} numbers" if tensor.ndim == 1 and len(shape) == 1 else f"shape {list(tensor.shape)}"
        raise InputError(f"{where}: {what} {given}, the site {site} has {site_dims(model, site)}.")


def _refuse(item: dict, where: str) -> None:
    if item.get("op") == "apply":
        raise InputError(f"{where}.op: 'apply' runs code and is refused by the server; valid ops: {choices(OPS)}.")
    code = [k for k in item if k in CODE_FIELDS]
    if code:
        raise InputError(f"{where}.{code[0]}: fields that carry code are refused; interventions are data "
                         f"(valid ops: {choices(OPS)}).")
    if "rows" in item:
        raise InputError(f"{where}.rows: a request owns exactly its own batch row; remove 'rows' (positions "
                         "index the request's own tokens).")


def _keys(item: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(item) - set(allowed))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}: unknown field for op {item.get('op')!r}; valid: {choices(allowed)}.")


def _positions(item: dict, where: str):
    try:
        return as_indices(item.get("positions"), f"{where}.positions")
    except InterplabError as e:
        raise InputError(str(e)) from None


def _scale(item: dict, where: str) -> float:
    scale = item.get("scale", 1.0)
    try:
        finite_scale(scale, f"{where}.scale")
    except InterplabError as e:
        raise InputError(str(e)) from None
    return float(scale)


def _named_steer(model, artifacts, item: dict, where: str) -> list:
    _keys(item, ("op", "site", "vector_name", "scale", "positions"), where)
    name = item["vector_name"]
    vec: SteeringVector = artifacts.get("vectors", name, f"{where}.vector_name")
    scale, positions = _scale(item, where), _positions(item, where)
    if "site" in item:
        site = parse_site(model, item["site"], f"{where}.site")
        if site in vec.vectors:
            tensor = vec.vectors[site]
        elif len(vec.vectors) == 1:
            tensor = vec.vector  # a one-site vector may steer any site of its width
        else:
            raise InputError(f"{where}.site: vector {name!r} covers sites {[str(s) for s in vec.sites]}, not {site}; "
                             "leave 'site' out to steer them all.")
        check_width(model, tensor, site, f"{where}.vector_name", f"vector {name!r} has")
        vec = SteeringVector({site: tensor}, vec.method, vec.meta)
    try:
        return vec.interventions(scale, positions)
    except InterplabError as e:
        raise InputError(f"{where}.positions: {e}") from None


def _clamp(model, artifacts, item: dict, where: str) -> ClampFeature:
    _keys(item, ("op", "site", "dictionary", "latent", "value", "positions"), where)
    name = item.get("dictionary")
    d = artifacts.get("dictionaries", name, f"{where}.dictionary")
    site = model.site(d.cfg.input_site)
    if "site" in item and parse_site(model, item["site"], f"{where}.site") != site:
        raise InputError(f"{where}.site: dictionary {name!r} reads {site}; clamp it there (or leave 'site' out).")
    if "latent" not in item or "value" not in item:
        raise InputError(f"{where}.{'latent' if 'latent' not in item else 'value'}: clamp_feature needs "
                         "'latent' (an index) and 'value' (a number).")
    try:
        latent = as_index(item["latent"], f"{where}.latent")
    except InterplabError as e:
        raise InputError(str(e)) from None
    if not 0 <= latent < d.cfg.d_sae:
        raise InputError(f"{where}.latent: latent {latent} is out of range; dictionary {name!r} has "
                         f"d_sae={d.cfg.d_sae} (valid 0..{d.cfg.d_sae - 1}).")
    value = item["value"]
    try:
        finite_scale(value, f"{where}.value")
    except InterplabError as e:
        raise InputError(str(e)) from None
    return ClampFeature(site, _positions(item, where), None, dictionary=d, latent=latent, value=float(value))


def _library(model, item: dict, where: str) -> Intervention:
    op = item.get("op")
    if not isinstance(op, str) or op not in INTERVENTIONS or op == "apply":
        raise InputError(f"{where}.op: unknown intervention op {op!r}; valid ops: {choices(OPS)}.")
    if "site" not in item:
        raise InputError(f"{where}.site: missing; give a site such as \"L0.resid_post\".")
    site = parse_site(model, item["site"], f"{where}.site")
    data = dict(item)
    for name in INTERVENTIONS.get(op).tensor_fields:
        if data.get(name) is not None:
            data[name] = decode_value(data[name], f"{where}.{name}")
            check_width(model, data[name], site, f"{where}.{name}")
    try:
        return Intervention.from_dict(data)
    except InterplabError as e:
        raise InputError(f"{where}: {e}") from None


def parse_interventions(items, model, artifacts, max_interventions: int) -> tuple[list, list[int]]:
    """Intervention objects (rows=None) and, for each, the index of the request item it came
    from (a multi-site vector gives several)."""
    where = "interplab.interventions"
    if items is None:
        return [], []
    if not isinstance(items, list):
        raise InputError(f"{where}: must be a list of intervention objects, got {type(items).__name__}.")
    if len(items) > max_interventions:
        raise InputError(f"{where}: {len(items)} interventions, more than the limit of {max_interventions} "
                         "(max_interventions).")
    out, origins = [], []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise InputError(f"{at}: an intervention is a JSON object with an 'op', got {type(item).__name__}.")
        _refuse(item, at)
        if item.get("op") == "steer" and "vector_name" in item:
            made = _named_steer(model, artifacts, item, at)
        elif item.get("op") == "clamp_feature":
            made = [_clamp(model, artifacts, item, at)]
        else:
            made = [_library(model, item, at)]
        out += made
        origins += [i] * len(made)
    return out, origins
