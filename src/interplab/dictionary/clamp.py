"""Feature clamping: set one sparse-dictionary latent to a chosen value inside the forward pass.

At the dictionary's site the activation ``x`` is encoded, latent ``i`` is set to ``value`` and
the *difference* of the two decodings is added back::

    x' = x + decode(z') - decode(z),   z = encode(x),  z' = z with z_i := value

so the dictionary's reconstruction error (everything it does not explain) is kept, as in
Templeton et al. 2024 ("Scaling Monosemanticity", feature clamping) and Marks et al. 2024
("Sparse Feature Circuits", which keep the error term). The decoder is affine, so the
difference is exactly ``(value - z_i) * W_dec[i] / out_scale``: clamping a latent to the value
it already has changes nothing, bit for bit. Only SAEs (input site = output site, same width)
can be clamped this way: a transcoder reads one site and writes another.

A ``ClampFeature`` is an intervention like ``Steer`` (positions, rows, checked before work), but
it holds a loaded dictionary, so it does not round-trip through JSON by itself: the service
names the dictionary instead (``serve.specs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from interplab.core.errors import InterventionError
from interplab.core.sites import Site
from interplab.dictionary.base import Dictionary
from interplab.interventions.spec import Intervention
from interplab.interventions.values import as_index, finite_scale


@dataclass(frozen=True, eq=False)
class ClampFeature(Intervention):
    """Set latent ``latent`` of ``dictionary`` to ``value`` at its site, keeping the error term."""

    dictionary: Dictionary | None = None
    latent: int = 0
    value: float = 0.0
    op: ClassVar[str] = "clamp_feature"

    def __post_init__(self) -> None:
        super().__post_init__()
        d = self.dictionary
        if not isinstance(d, Dictionary):
            raise InterventionError(f"clamp_feature at {self.site} needs a loaded dictionary, got {type(d).__name__}.")
        if d.is_transcoder:
            raise InterventionError(
                f"clamp_feature at {self.site}: the dictionary is a transcoder ({d.cfg.input_site} -> "
                f"{d.cfg.target_site}); only an SAE (one site in and out) can be clamped in place.")
        if d.cfg.input_site and Site.parse(d.cfg.input_site) != self.site:
            raise InterventionError(
                f"clamp_feature at {self.site}: the dictionary reads {d.cfg.input_site}; clamp it there.")
        latent = as_index(self.latent, f"clamp_feature at {self.site}: latent")
        if not 0 <= latent < d.cfg.d_sae:
            raise InterventionError(f"clamp_feature at {self.site}: latent {latent} is out of range "
                                    f"(the dictionary has d_sae={d.cfg.d_sae}: valid 0..{d.cfg.d_sae - 1}).")
        object.__setattr__(self, "latent", latent)
        finite_scale(self.value, f"clamp_feature at {self.site}: value")
        object.__setattr__(self, "value", float(self.value))

    def check(self, info) -> None:
        super().check(info)
        width = math.prod(info.site_shape)
        if width != self.dictionary.cfg.d_in:
            raise InterventionError(
                f"clamp_feature at {info.site}: the dictionary takes d_in={self.dictionary.cfg.d_in} "
                f"numbers per token but the site has {width} ({list(info.site_shape)}).")

    def latents(self, current: torch.Tensor) -> torch.Tensor:
        """The dictionary's latents [n, d_sae] of activations [n, *site] (model units)."""
        d = self.dictionary
        x = current.reshape(current.shape[0], -1).to(device=d.W_enc.device, dtype=d.W_enc.dtype)
        return d.encode(x)

    def compute(self, current, slot, key):
        d = self.dictionary
        with torch.no_grad():
            z_i = self.latents(current)[:, self.latent]
            row = d.W_dec[self.latent] / d.out_scale  # decode(z') - decode(z) = (v - z_i) * row
            delta = (self.value - z_i)[:, None] * row[None, :]
        delta = delta.reshape(current.shape).to(device=current.device)
        return current.to(delta.dtype) + delta

    def to_dict(self) -> dict:
        raise InterventionError(
            "A clamp_feature intervention holds a loaded dictionary and does not serialise by itself; "
            "the service names the dictionary: {\"op\": \"clamp_feature\", \"dictionary\": NAME, "
            "\"latent\": i, \"value\": v}.")
