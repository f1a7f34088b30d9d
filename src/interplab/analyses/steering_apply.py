"""Applying steering vectors, per batch row, and clamping a dictionary latent.

Steering adds ``scale * vector`` at the vector's sites (Turner et al. 2023, ActAdd; Rimsky et
al. 2024, CAA). ``steer_interventions`` builds the ``Steer`` specs for a batch in which each row
may carry its own vector and scale: rows sharing a (vector, scale) become one ``Steer`` with
``rows=``, so a whole scale sweep or several users' requests run in one forward. Rows with
scale 0 (or no vector) get no intervention at all, so they are bit-identical to an unsteered
run.

When: ``positions=None`` steers every token; under ``HookedModel.generate`` that is every
prompt token and every generated one (``runtime.generate``: interventions act whenever a token
is computed, prefill and decode alike), i.e. steering "during the prompt and generation".
``positions=range(n)`` or negative prompt positions steer the prompt only; positions ``>= n``
(the prompt's length) are generated tokens.

``clamp_feature`` fixes one latent of a sparse dictionary (Templeton et al. 2024, "Scaling
Monosemanticity", feature clamping): encode, set latent ``i`` to ``value``, decode, and add
back the reconstruction error ``x − x̂``, so only the latent's contribution changes —
clamping a latent to its own activation leaves the activations as they were (up to float
rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interplab.analyses.steering import SteeringVector
from interplab.core.errors import InputError
from interplab.interventions.spec import Apply, Steer


def steer_interventions(vectors: SteeringVector | Sequence[SteeringVector | None],
                        scales: float | Sequence[float] = 1.0, *,
                        positions: Sequence[int] | None = None,
                        rows: Sequence[int] | None = None) -> list[Steer]:
    """``Steer`` specs for a batch where each row may have its own vector and scale.

    ``vectors``: one vector for every row, or one per row (``None``: leave the row alone).
    ``scales``: one scale, or one per row. ``rows``: the batch rows the lists refer to
    (default ``0..n-1``; with one vector and one scale, ``None`` means every row).
    """
    per_row = not isinstance(vectors, SteeringVector) or not _is_scalar(scales)
    if not per_row:
        if float(scales) == 0.0:
            return []
        return vectors.interventions(float(scales), positions, rows)
    n = _n_rows(vectors, scales, rows)
    vec_list = [vectors] * n if isinstance(vectors, SteeringVector) else list(vectors)
    scale_list = [float(scales)] * n if _is_scalar(scales) else [float(s) for s in scales]
    row_ids = list(range(n)) if rows is None else [int(r) for r in rows]
    groups: dict[tuple[int, float], list[int]] = {}
    keep: dict[int, SteeringVector] = {}
    for r, v, s in zip(row_ids, vec_list, scale_list, strict=True):
        if v is None or s == 0.0:
            continue
        keep[id(v)] = v
        groups.setdefault((id(v), s), []).append(r)
    out: list[Steer] = []
    for (vid, s), group in groups.items():
        out += keep[vid].interventions(s, positions, tuple(group))
    return out


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float)) or (isinstance(x, torch.Tensor) and x.ndim == 0)


def _n_rows(vectors, scales, rows) -> int:
    sizes = {}
    if not isinstance(vectors, SteeringVector):
        sizes["vectors"] = len(vectors)
    if not _is_scalar(scales):
        sizes["scales"] = len(scales)
    if rows is not None:
        sizes["rows"] = len(rows)
    if len(set(sizes.values())) > 1:
        raise InputError(f"steer_interventions: per-row lists differ in length: {sizes}; give one "
                         "vector and one scale per row (or a single one for all).")
    n = next(iter(sizes.values()))
    if n == 0:
        raise InputError("steer_interventions: empty per-row lists.")
    return n


def clamp_feature(dictionary, latent: int, value: float, *,
                  positions: Sequence[int] | None = None,
                  rows: Sequence[int] | None = None) -> Apply:
    """An ``Apply`` at the dictionary's input site that clamps latent ``latent`` to ``value``.

    ``x ↦ x − x̂(z) + x̂(z')`` with ``z'`` = ``z`` except ``z'[latent] = value``: the error term
    ``x − x̂`` is kept, so the edit is exactly ``(value − z[latent]) · W_dec[latent] / out_scale``.
    Only for an SAE (input site = target site); a transcoder's output is at another site.
    """
    d_sae = dictionary.W_dec.shape[0]
    if not 0 <= latent < d_sae:
        raise InputError(f"latent {latent} out of range for a dictionary with {d_sae} latents "
                         f"(valid: 0..{d_sae - 1}).")
    if getattr(dictionary, "is_transcoder", False):
        raise InputError("clamp_feature edits an SAE's own site; a transcoder reads one site and "
                         "writes another. Steer with from_dictionary(...) at its output site.")
    site = dictionary.cfg.input_site
    if not site:
        raise InputError("This dictionary names no input_site; set it before clamping.")

    def clamp(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            flat = x.reshape(-1, x.shape[-1])
            z = dictionary.encode(flat)
            # x̂(z') − x̂(z) = (z'_i − z_i) W_dec[i] / out_scale: computing the difference
            # directly (not x − x̂ + x̂') keeps clamping to the current value an exact identity.
            delta = (value - z[:, latent])[:, None] * dictionary.W_dec[latent][None, :]
            delta = delta / dictionary.out_scale
            return (flat + delta.to(flat.dtype)).reshape(x.shape)

    return Apply(site, fn=clamp, positions=positions, rows=rows)
