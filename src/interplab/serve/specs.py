"""The ``interplab`` object of a request body: what to edit and which internals to return.

Every field is optional; every error is an ``InputError`` naming its field path and the valid
choices (``interplab.interventions[1].vector_name: unknown vector 'x'; registered: a, b``)::

    "interplab": {
      "interventions": [                      # at most max_interventions items; see below
        {"op": "steer", "site": "L3.resid_post", "vector": [..d_model numbers..], "scale": 4},
        {"op": "steer", "vector_name": "happy", "scale": 4},        # a registered vector
        {"op": "ablate", "site": "L2.attn.z[h1]", "positions": [-1]},
        {"op": "patch", "site": "L0.resid_pre", "positions": [0], "value": {"safetensors_b64": "..."}},
        {"op": "clamp_feature", "dictionary": "sae-l3", "latent": 12, "value": 8.0}
      ],
      "return": {
        "activations": {"sites": ["L3.resid_post"], "positions": "all", "reduce": "none",
                        "format": "json"},
        "features": {"dictionary": "sae-l3", "k": 5, "positions": "all"},   # or a list of them
        "probes": ["sentiment"],
        "logit_lens": {"sites": ["L1.resid_post"], "k": 5, "positions": "all"}
      },
      "compare_unsteered": false              # also run the request without its interventions
    }

Interventions: the library's JSON specs (``Intervention.from_dict``: patch, ablate, steer) with
tensors as a list of numbers, ``{"shape", "dtype", "data"}`` or ``{"safetensors_b64": ...}``
(one tensor in a base64 safetensors blob); a registered steering vector by ``vector_name``
(at its own sites, or at ``site`` when it has one site of that width); a feature clamp by
dictionary name (``x + decode(z') - decode(z)`` at the dictionary's site, keeping its error
term). ``positions`` are token positions of the request's own sequence (prompt, then the
generated tokens; negative counts back from the prompt's end). ``apply``, code fields and
``rows`` are refused: a request owns exactly its own batch row.

Returned internals (``internals()``): positions are ``"prompt"``, ``"generated"``, ``"all"``
or a list of token positions (negative: from the prompt's end). The last generated token's
activations are never computed (generation stops once it is sampled), so ``"generated"`` and
``"all"`` end one token before the returned text does; listed positions outside what was
computed are left out, and each section says which positions it holds. ``reduce`` ``"mean"`` /
``"last"`` returns one vector over the chosen positions. Features are the top-k latents per
token of a registered dictionary at its site; probes are each registered probe's score
(``x·w + b``, positive = its label 1) per token at its site; the logit lens reads a
residual-stream site through the final norm and unembedding (top-k ids, probabilities and, with
a tokenizer, strings).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from interplab.core.errors import InputError, InterplabError, choices
from interplab.core.sites import Site
from interplab.serve.artifacts import Artifacts
from interplab.serve.internals import internals
from interplab.serve.spec_interventions import parse_interventions
from interplab.serve.spec_return import (
    ActivationsReturn,
    FeaturesReturn,
    LensReturn,
    parse_return,
)

__all__ = ["SCHEMA", "Artifacts", "RequestSpec", "internals", "parse_spec"]

TOP_KEYS = ("interventions", "return", "compare_unsteered")


@dataclass
class RequestSpec:
    """One request's parsed ``interplab`` object: interventions (rows=None) and what to return.

    ``origins[j]`` is the index in ``interplab.interventions`` that ``interventions[j]`` came
    from (a multi-site registered vector gives several). ``capture`` lists every site the
    returned internals need, once each."""

    interventions: list = field(default_factory=list)
    capture: list[Site] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    activations: ActivationsReturn | None = None
    features: list[FeaturesReturn] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    logit_lens: LensReturn | None = None
    compare_unsteered: bool = False

    def unsteered(self) -> RequestSpec:
        """The same request without its interventions (the baseline of ``compare_unsteered``)."""
        return dataclasses.replace(self, interventions=[], origins=[], compare_unsteered=False)

    def check(self, model, prompt_len: int, max_new_tokens: int) -> None:
        """Check the interventions against this request's sequence (positions, value shapes)
        before it queues, naming the item at fault; the engine checks again on submit."""
        import torch

        from interplab.runtime.inputs import batch_from_ids

        batch = batch_from_ids(torch.zeros(1, max(prompt_len, 1), dtype=torch.long))
        for iv, i in zip(self.interventions, self.origins):
            try:
                model.check([iv], batch, max_new_tokens)
            except InterplabError as e:
                raise InputError(f"interplab.interventions[{i}]: {e}") from None


def parse_spec(body: dict | None, model, artifacts, max_interventions: int = 64) -> RequestSpec:
    """Parse a request's ``interplab`` object (None: nothing to edit or return)."""
    if body is None:
        return RequestSpec()
    if not isinstance(body, dict):
        raise InputError(f"interplab: must be an object with fields {choices(TOP_KEYS)}, got {type(body).__name__}.")
    unknown = sorted(set(body) - set(TOP_KEYS))
    if unknown:
        raise InputError(f"interplab.{unknown[0]}: unknown field; valid: {choices(TOP_KEYS)}.")
    interventions, origins = parse_interventions(body.get("interventions"), model, artifacts, max_interventions)
    compare = body.get("compare_unsteered", False)
    if not isinstance(compare, bool):
        raise InputError(f"interplab.compare_unsteered: must be true or false, got {compare!r}.")
    ret = parse_return(body.get("return"), model, artifacts)
    return RequestSpec(interventions, ret["capture"], origins, ret["activations"], ret["features"],
                       ret["probes"], ret["logit_lens"], compare)


_POSITIONS = {"oneOf": [{"enum": ["prompt", "generated", "all"]}, {"type": "array", "items": {"type": "integer"}}],
              "default": "all"}
_TENSOR = {"description": "a (nested) list of numbers, {shape, dtype, data} or {safetensors_b64}"}
SCHEMA = {
    "type": "object",
    "description": "interplab's per-request edits and returned internals (see interplab.serve.specs).",
    "properties": {
        "interventions": {"type": "array", "items": {"type": "object", "required": ["op"], "properties": {
            "op": {"enum": ["patch", "ablate", "steer", "clamp_feature"]},
            "site": {"type": "string", "example": "L3.resid_post"},
            "positions": {"type": "array", "items": {"type": "integer"}},
            "value": _TENSOR, "vector": _TENSOR, "scale": {"type": "number"},
            "mode": {"enum": ["zero", "mean", "resample"]}, "seed": {"type": "integer"},
            "vector_name": {"type": "string"}, "dictionary": {"type": "string"},
            "latent": {"type": "integer"}}}},
        "return": {"type": "object", "properties": {
            "activations": {"type": "object", "properties": {
                "sites": {"type": "array", "items": {"type": "string"}}, "positions": _POSITIONS,
                "reduce": {"enum": ["none", "mean", "last"]}, "format": {"enum": ["json", "safetensors_b64"]}}},
            "features": {"type": "object", "properties": {
                "dictionary": {"type": "string"}, "k": {"type": "integer"}, "positions": _POSITIONS}},
            "probes": {"type": "array", "items": {"type": "string"}},
            "logit_lens": {"type": "object", "properties": {
                "sites": {"type": "array", "items": {"type": "string"}}, "k": {"type": "integer"},
                "positions": _POSITIONS}}}},
        "compare_unsteered": {"type": "boolean", "default": False},
    },
}
