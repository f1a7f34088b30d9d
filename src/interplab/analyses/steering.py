"""Steering vectors: directions in activation space that, added to the residual stream, push a
behaviour. Five ways to get one, all returning a ``SteeringVector`` in model units:

* ``diff_means`` — mean of the positive set's reduced activations minus the negative set's.
  With A/B answer-completions as prompts and ``reduction="last"`` this is Contrastive
  Activation Addition (CAA; Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation
  Addition").
* ``actadd`` — Activation Addition (Turner et al. 2023, "Steering Language Models With
  Activation Engineering"): one prompt pair; the vector is the difference of the two prompts'
  activations position by position, added from the steered prompt's first token on. When the
  two prompts tokenize to different lengths the shorter is right-padded with a space token, as
  in the paper (their ``" "`` padding), so every position has a partner.
* ``pca_diff`` — RepE's PCA reading vector (Zou et al. 2023, "Representation Engineering"):
  the first principal component of the paired differences pos_i − neg_i. A PC has no sign, so
  it is flipped to make the mean difference project positively, and its length is set to the
  mean difference's projection on it (``|mean(diff) · u|``), which puts it in the same units
  as ``diff_means`` (scale 1 moves activations by the typical contrast along the direction).
* ``from_probe`` — a linear probe's (unit) direction, scaled to a given norm or to the gap
  between class means projected on it (Alain & Bengio 2016; Li et al. 2023, "Inference-Time
  Intervention", steer along probe directions).
* ``from_dictionary`` — one sparse-dictionary latent's decoder row in model units
  (``W_dec[i] / out_scale``) at the dictionary's target site (Templeton et al. 2024, "Scaling
  Monosemanticity", feature steering).

Every extractor validates its input (empty sets, unequal pair counts, sites, widths) before
any forward pass. Each model-level function has a ``*_from_acts`` twin doing the maths on
activations given directly, which is what the unit tests check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from interplab.core.artifacts import write_artifact
from interplab.core.errors import ConfigError, InputError, InterplabError, choices
from interplab.core.model import Model
from interplab.core.sites import Site, as_sites
from interplab.interventions.spec import Steer

FORMAT = "interplab-steering-vector/1"
METHODS = ("diff_means", "actadd", "pca_diff", "probe", "dictionary", "custom")


@dataclass
class SteeringVector:
    """One steering direction, possibly spread over several sites (a multi-layer vector).

    ``vectors`` maps each site to a tensor ``[d]`` (added at every steered token) or
    ``[n_positions, d]`` (ActAdd: one row per position from the prompt's start).
    """

    vectors: dict[Site, torch.Tensor]
    method: str = "custom"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise InputError("A SteeringVector needs at least one site: vectors is empty.")
        if self.method not in METHODS:
            raise ConfigError(f"Unknown steering method {self.method!r}; valid: {choices(METHODS)}.")
        out = {}
        for site, vec in self.vectors.items():
            vec = torch.as_tensor(vec).detach().float().cpu()
            if vec.ndim not in (1, 2) or vec.numel() == 0:
                raise InputError(
                    f"Steering vector at {site} has shape {tuple(vec.shape)}; it must be [d] or "
                    "[n_positions, d]."
                )
            if not torch.isfinite(vec).all():
                raise InputError(f"Steering vector at {site} has {int((~torch.isfinite(vec)).sum())} non-finite entries "
                                 f"(NaN or infinity) of {vec.numel()}; a steering vector must be finite.")
            out[Site.parse(site)] = vec
        self.vectors = out

    # -- views --------------------------------------------------------------------------------
    @property
    def sites(self) -> list[Site]:
        return list(self.vectors)

    @property
    def site(self) -> Site:
        """The site of a single-site vector (the earliest one of a multi-site vector)."""
        return min(self.vectors, key=site_order)

    @property
    def vector(self) -> torch.Tensor:
        """The tensor at ``site``."""
        return self.vectors[self.site]

    def norm(self) -> dict[str, float]:
        return {str(s): float(v.norm()) for s, v in self.vectors.items()}

    def check(self, model) -> None:
        """Raise (before any forward) if a site is not on ``model`` or a width does not fit."""
        for site, vec in self.vectors.items():
            model.site(site)  # SiteError for a layer / head out of range
            check_width(vec, model.site_shape(site), site)

    # -- application --------------------------------------------------------------------------
    def interventions(self, scale: float, positions: Sequence[int] | None = None,
                      rows: Sequence[int] | None = None) -> list[Steer]:
        """One ``Steer`` per site adding ``scale * vector``. A ``[n_positions, d]`` (ActAdd)
        vector acts on positions ``0..n_positions-1`` unless ``positions`` says otherwise."""
        out = []
        for site, vec in self.vectors.items():
            pos = positions
            if vec.ndim == 2:
                pos = tuple(range(vec.shape[0])) if positions is None else tuple(positions)
                if len(pos) != vec.shape[0]:
                    raise InputError(
                        f"The vector at {site} has {vec.shape[0]} positions (ActAdd), but "
                        f"{len(pos)} positions were given: {list(pos)}."
                    )
            out.append(Steer(site, vector=vec, scale=float(scale), positions=pos, rows=rows))
        return out

    # -- artifacts ----------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False, model=None, **extra) -> Path:
        """Write ``config.json`` + ``vectors.safetensors`` + ``provenance.json`` atomically."""
        meta = {"format": FORMAT, "method": self.method, "sites": [str(s) for s in self.vectors], "meta": self.meta}
        return write_artifact(path, meta, {str(s): v for s, v in self.vectors.items()}, "vectors.safetensors",
                              overwrite, model, **extra)

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        path = Path(path)
        cfg = path / "config.json"
        if not cfg.is_file():
            raise InterplabError(f"{path} is not a steering-vector directory (no config.json).")
        try:
            meta = json.loads(cfg.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise InterplabError(f"{cfg} is not valid JSON ({e}); the vector is damaged: extract it again.") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise InterplabError(
                f"{path}/config.json has format {meta.get('format') if isinstance(meta, dict) else None!r}, not {FORMAT!r}."
            )
        weights = path / "vectors.safetensors"
        if not weights.is_file():
            raise InterplabError(f"{path} has no vectors.safetensors; the save did not finish.")
        try:
            tensors = load_file(str(weights))
        except (SafetensorError, OSError) as e:
            raise InterplabError(f"{weights} cannot be read ({e}); the vector is damaged: extract it again.") from None
        missing = [s for s in meta.get("sites", []) if s not in tensors]
        if missing or "method" not in meta:
            raise InterplabError(f"{path} is damaged: config.json lists sites {missing} that vectors.safetensors "
                                 "lacks (or no method); extract the vector again.")
        try:
            return cls({Site.parse(s): tensors[s] for s in meta["sites"]}, meta["method"], meta.get("meta", {}))
        except InputError as e:
            raise InputError(f"Loading {weights}: {e} Extract the vector again.") from None


# -- checks -------------------------------------------------------------------------------------
_BLOCK_ORDER = {"resid_pre": 0, "attn.q": 1, "attn.k": 1, "attn.v": 1, "attn.pattern": 2,
                "attn.z": 3, "attn_out": 4, "resid_mid": 5, "mlp.hidden": 6, "mlp_out": 7,
                "resid_post": 8}


def site_order(site: Site | str) -> tuple[float, int]:
    """A key ordering sites as the forward pass computes them (embed first, logits last)."""
    site = Site.parse(site)
    if site.layer is None:
        return {"embed": (-1.0, 0), "ln_final": (float("inf"), 0)}.get(
            site.kind.value, (float("inf"), 1))
    return (float(site.layer), _BLOCK_ORDER[site.kind.value])


def check_width(vec: torch.Tensor, shape: Sequence[int], site: Site | str) -> None:
    shape = tuple(shape)
    if tuple(vec.shape[-len(shape):]) != shape or vec.ndim > len(shape) + 1:
        want = "x".join(map(str, shape))
        raise InputError(
            f"vector has width {'x'.join(map(str, vec.shape[-len(shape):]))} but {site} is "
            f"{want} wide; extract the vector at this site (or one of the same width)."
        )


def _check_sets(pos, neg, what: str, paired: bool) -> None:
    n_pos, n_neg = len(pos), len(neg)
    if n_pos == 0 or n_neg == 0:
        raise InputError(
            f"empty contrastive set: {what} got {n_pos} positive and {n_neg} negative examples; "
            "a steering vector is a contrast, so give at least one of each."
        )
    if paired and n_pos != n_neg:
        raise InputError(
            f"{what} pairs positive and negative examples, but got {n_pos} positive and {n_neg} "
            "negative; give the same number (pos[i] is the partner of neg[i])."
        )


def _model_sites(model: Model, sites) -> list[Site]:
    out = [model.site(s) for s in as_sites(sites)]  # SiteError before any forward
    if not out:
        raise InputError("No sites given: pass at least one, e.g. 'L10.resid_post'.")
    return out


def _acts_pair(pos_acts, neg_acts):
    """Normalise per-site activations (Mapping site → [n, d], or one tensor) to dicts."""
    if isinstance(pos_acts, torch.Tensor) != isinstance(neg_acts, torch.Tensor):
        raise InputError("Give positive and negative activations in the same form (both "
                         "tensors or both {site: tensor} mappings).")
    if isinstance(pos_acts, torch.Tensor):
        return {"custom": pos_acts}, {"custom": neg_acts}
    if set(map(str, pos_acts)) != set(map(str, neg_acts)):
        raise InputError(f"Positive activations cover sites {sorted(map(str, pos_acts))} but "
                         f"negative ones {sorted(map(str, neg_acts))}.")
    neg = {str(k): v for k, v in neg_acts.items()}
    return {str(k): v for k, v in pos_acts.items()}, neg


def _check_acts(p: torch.Tensor, n: torch.Tensor, site, paired: bool, what: str) -> None:
    if p.ndim != 2 or n.ndim != 2:
        raise InputError(f"{what} at {site}: activations must be [n, d]; got "
                         f"{tuple(p.shape)} and {tuple(n.shape)}.")
    _check_sets(range(p.shape[0]), range(n.shape[0]), what, paired)
    if p.shape[1] != n.shape[1]:
        raise InputError(f"{what} at {site}: positive activations are {p.shape[1]} wide but "
                         f"negative ones {n.shape[1]}.")


# -- CAA / difference of means ------------------------------------------------------------------
def diff_means_from_acts(pos_acts, neg_acts) -> dict[str, torch.Tensor]:
    """``mean(pos) − mean(neg)`` per site; activations ``{site: [n, d]}`` (sets may differ in
    size: the means are unpaired)."""
    pos, neg = _acts_pair(pos_acts, neg_acts)
    out = {}
    for site in pos:
        p, n = pos[site].float(), neg[site].float()
        _check_acts(p, n, site, False, "diff_means")
        out[site] = p.mean(0) - n.mean(0)
    return out


def diff_means(model: Model, pos_prompts, neg_prompts, sites, reduction: str = "last",
               batch_size: int = 16) -> SteeringVector:
    """CAA / difference-of-means vector at ``sites`` from reduced activations (``collect``)."""
    pos, neg = _contrastive_acts(model, pos_prompts, neg_prompts, sites, reduction, batch_size,
                                 "diff_means", paired=False)
    return _shaped(model, diff_means_from_acts(pos, neg), "diff_means", {
        "reduction": reduction, "n_pos": len(pos_prompts), "n_neg": len(neg_prompts)})


def _contrastive_acts(model: Model, pos_prompts, neg_prompts, sites, reduction: str, batch_size: int,
                      method: str, paired: bool):
    """Check the sets, reduction and sites (before any forward), then collect both sets."""
    from interplab.analyses.collect import check_reduction, collect

    _check_sets(pos_prompts, neg_prompts, method, paired=paired)
    check_reduction(reduction)
    site_list = _model_sites(model, sites)
    return (collect(model, pos_prompts, site_list, reduction, batch_size),
            collect(model, neg_prompts, site_list, reduction, batch_size))


def _shaped(model: Model, vecs: dict[str, torch.Tensor], method: str, meta: dict) -> SteeringVector:
    """Reshape flattened [d] vectors back to the site's shape (e.g. per-head sites stay [d_head])."""
    out = {}
    for s, v in vecs.items():
        shape = model.site_shape(s)
        out[Site.parse(s)] = v.reshape(*v.shape[:-1], *shape)
    return SteeringVector(out, method, meta)


# -- RepE PCA of paired differences ------------------------------------------------------------
def pca_diff_from_acts(pos_acts, neg_acts) -> dict[str, torch.Tensor]:
    """First principal component of the paired differences ``pos[i] − neg[i]`` per site.

    The sign is fixed so ``mean(diff) · u > 0`` and the length is ``mean(diff) · u``. The PC is
    the top right-singular vector of the differences, uncentred as in RepE (centring would
    remove exactly the consistent shift we are after when the differences agree)."""
    pos, neg = _acts_pair(pos_acts, neg_acts)
    out = {}
    for site in pos:
        p, n = pos[site].float(), neg[site].float()
        _check_acts(p, n, site, True, "pca_diff")
        diff = (p - n).double()
        mean = diff.mean(0)
        if diff.shape[0] == 1:
            u = mean / mean.norm().clamp_min(1e-30)
        else:
            u = torch.linalg.svd(diff, full_matrices=False).Vh[0]
        along = float(mean @ u)
        if along < 0:
            u, along = -u, -along
        out[site] = (u * along).float()
    return out


def pca_diff(model: Model, pos_prompts, neg_prompts, sites, reduction: str = "last",
             batch_size: int = 16) -> SteeringVector:
    """RepE PCA vector from paired prompts (``pos_prompts[i]`` is the partner of ``neg_prompts[i]``)."""
    pos, neg = _contrastive_acts(model, pos_prompts, neg_prompts, sites, reduction, batch_size,
                                 "pca_diff", paired=True)
    return _shaped(model, pca_diff_from_acts(pos, neg), "pca_diff", {
        "reduction": reduction, "n_pairs": len(pos_prompts)})


# -- ActAdd ------------------------------------------------------------------------------------
def actadd_from_acts(pos_act: torch.Tensor, neg_act: torch.Tensor) -> torch.Tensor:
    """Position-wise difference of two prompts' activations ``[n_positions, d]`` (same length)."""
    if pos_act.shape != neg_act.shape:
        raise InputError(f"actadd needs the two prompts' activations at the same positions; got "
                         f"{tuple(pos_act.shape)} and {tuple(neg_act.shape)}.")
    return pos_act.float() - neg_act.float()


def actadd(model: Model, pos_prompt, neg_prompt, sites, pad_token: int | None = None) -> SteeringVector:
    """ActAdd vector from one prompt pair: per-position activation differences ``[n, *site]``,
    added from the steered prompt's first token. Prompts are strings or 1-D token ids; the
    shorter is right-padded with ``pad_token`` (default: the tokenizer's token for ``" "``)."""
    pos_ids, neg_ids = _ids(model, pos_prompt), _ids(model, neg_prompt)
    _check_sets(pos_ids.tolist(), neg_ids.tolist(), "actadd", paired=False)
    site_list = _model_sites(model, sites)
    if len(pos_ids) != len(neg_ids):
        if pad_token is None:
            pad_token = _space_token(model)
        width = max(len(pos_ids), len(neg_ids))
        pos_ids, neg_ids = (torch.cat([t, torch.full((width - len(t),), pad_token)])
                            for t in (pos_ids, neg_ids))
    _, cache = model.run_with_cache(torch.stack([pos_ids, neg_ids]), site_list,
                                    stop_after_last_site=True)
    vecs = {Site.parse(s): actadd_from_acts(cache[s][0], cache[s][1]) for s in site_list}
    return SteeringVector(vecs, "actadd", {"n_positions": len(pos_ids),
                                           "pos_prompt": _text(pos_prompt),
                                           "neg_prompt": _text(neg_prompt)})


def _ids(model: Model, prompt) -> torch.Tensor:
    if isinstance(prompt, torch.Tensor):
        ids = prompt.long().flatten().cpu()
    else:
        ids = model.to_batch(prompt).input_ids[0].cpu()
    return ids


def _space_token(model: Model) -> int:
    tok = model.tokenizer
    if tok is None:
        raise InputError("actadd: the prompts tokenize to different lengths and this model has no "
                         "tokenizer to pad with spaces; pass pad_token=<id>.")
    ids = tok.encode(" ", add_special_tokens=False)
    if len(ids) != 1:
        raise InputError(f"actadd: ' ' is {len(ids)} tokens for this tokenizer; pass pad_token.")
    return int(ids[0])


def _text(prompt):
    return prompt if isinstance(prompt, str) else None


# -- from a probe -------------------------------------------------------------------------------
def from_probe(probe, norm: float | None = None, acts: torch.Tensor | None = None,
               labels: torch.Tensor | None = None) -> SteeringVector:
    """A probe's direction as a steering vector at the probe's site.

    Length: ``norm`` when given; otherwise the class-mean gap projected on the direction,
    ``(mean(acts[labels==1]) − mean(acts[labels==0])) · u`` (needs ``acts`` and ``labels``);
    failing both, the probe's ``meta['class_gap']`` if it recorded one. The sign is the probe's:
    positive scales push towards label 1.
    """
    u = torch.as_tensor(probe.direction).float().flatten()
    u = u / u.norm().clamp_min(1e-30)
    if norm is not None:
        if norm <= 0:
            raise InputError(f"from_probe: norm must be > 0, got {norm}.")
        length = float(norm)
    elif acts is not None and labels is not None:
        labels = torch.as_tensor(labels)
        pos, neg = acts[labels == 1].float(), acts[labels == 0].float()
        _check_sets(range(len(pos)), range(len(neg)), "from_probe", paired=False)
        length = float((pos.mean(0) - neg.mean(0)) @ u)
    else:
        gap = getattr(probe, "meta", {}) or {}
        if "class_gap" not in gap:
            raise InputError("from_probe needs a length: pass norm=..., or acts and labels to "
                             "measure the class-mean gap along the probe's direction.")
        length = float(gap["class_gap"])
    return SteeringVector({Site.parse(probe.site): u * length}, "probe",
                          {"reduction": getattr(probe, "reduction", None), "norm": abs(length)})


# -- from a sparse dictionary -----------------------------------------------------------------
def from_dictionary(dictionary, latent: int, norm: float | None = None) -> SteeringVector:
    """The decoder direction of ``latent`` in model units, ``W_dec[latent] / out_scale``, at
    the dictionary's target site: adding it with scale ``a`` is what raising the latent's
    activation by ``a`` adds to the reconstruction. ``norm`` rescales it to that length."""
    d_sae = dictionary.W_dec.shape[0]
    if not 0 <= latent < d_sae:
        raise InputError(f"latent {latent} out of range for a dictionary with {d_sae} latents "
                         f"(valid: 0..{d_sae - 1}).")
    site = dictionary.cfg.target_site
    if not site:
        raise InputError("This dictionary names no input/output site; set its config's "
                         "input_site before steering with it.")
    vec = (dictionary.W_dec[latent].detach() / dictionary.out_scale).float()
    if norm is not None:
        vec = vec / vec.norm().clamp_min(1e-30) * norm
    return SteeringVector({Site.parse(site): vec}, "dictionary",
                          {"latent": int(latent), "arch": dictionary.arch})


def as_vector(vectors: Mapping | SteeringVector, method: str = "custom") -> SteeringVector:
    """Wrap a ``{site: tensor}`` mapping as a ``SteeringVector`` (a vector passes through)."""
    if isinstance(vectors, SteeringVector):
        return vectors
    return SteeringVector(dict(vectors), method)
