"""Typed activation sites and their string form.

A ``Site`` names one tensor in the forward pass. Its string form round-trips::

    embed                 token embeddings (after any embedding scale), before layer 0
    L5.resid_pre          input of block 5            [batch, pos, d_model]
    L5.resid_mid          residual after attention    [batch, pos, d_model]
    L5.resid_post         output of block 5           [batch, pos, d_model]
    L5.attn_out           what attention adds to the residual stream
    L5.mlp_out            what the MLP adds to the residual stream
    L3.attn.z / [h7]      head outputs before the output projection [batch, pos, n_heads, d_head]
    L3.attn.q / k / v     projections per head, before QK-norm and rotary embeddings
                          (k and v have n_kv_heads heads under grouped-query attention)
    L3.attn.pattern[h1]   attention probabilities [batch, n_heads, q_pos, k_pos] (read-only)
    L3.mlp.hidden         input to the MLP's down projection [batch, pos, d_mlp]
    ln_final              output of the final norm
    logits                output of the unembedding [batch, pos, d_vocab]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from interplab.core.errors import SiteError, choices


class SiteKind(StrEnum):
    EMBED = "embed"
    RESID_PRE = "resid_pre"
    RESID_MID = "resid_mid"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    MLP_OUT = "mlp_out"
    Z = "attn.z"
    Q = "attn.q"
    K = "attn.k"
    V = "attn.v"
    PATTERN = "attn.pattern"
    MLP_HIDDEN = "mlp.hidden"
    LN_FINAL = "ln_final"
    LOGITS = "logits"

    @property
    def layered(self) -> bool:
        return self not in (SiteKind.EMBED, SiteKind.LN_FINAL, SiteKind.LOGITS)

    @property
    def headed(self) -> bool:
        return self in HEADED_KINDS


HEADED_KINDS = frozenset({SiteKind.Z, SiteKind.Q, SiteKind.K, SiteKind.V, SiteKind.PATTERN})
_KINDS = {k.value: k for k in SiteKind}
_PATTERN = re.compile(r"^(?:L(?P<layer>\d+)\.)?(?P<kind>[a-z_.]+?)(?:\[h(?P<head>\d+)\])?$")


@dataclass(frozen=True, order=True)
class Site:
    """One activation tensor of the forward pass: ``Site(layer, kind, head=None)``."""

    layer: int | None
    kind: SiteKind
    head: int | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if not isinstance(kind, SiteKind):
            if kind not in _KINDS:
                raise SiteError(
                    f"Unknown site kind {kind!r}. Valid kinds: {choices(_KINDS)}."
                )
            object.__setattr__(self, "kind", _KINDS[kind])
            kind = self.kind
        if kind.layered and self.layer is None:
            raise SiteError(f"Site kind {kind.value!r} needs a layer, e.g. 'L0.{kind.value}'.")
        if not kind.layered and self.layer is not None:
            raise SiteError(f"Site kind {kind.value!r} has no layer; write it as {kind.value!r}.")
        if self.layer is not None and self.layer < 0:
            raise SiteError(f"Layer must be >= 0, got {self.layer} in site {kind.value!r}.")
        if self.head is not None and not kind.headed:
            raise SiteError(
                f"Site kind {kind.value!r} has no heads; per-head kinds are "
                f"{choices(sorted(k.value for k in HEADED_KINDS))}."
            )
        if self.head is not None and self.head < 0:
            raise SiteError(f"Head must be >= 0, got {self.head}.")

    @classmethod
    def parse(cls, text: str | Site) -> Site:
        """Parse ``'L5.resid_pre'``, ``'L3.attn.z[h7]'``, ``'logits'``; a Site passes through."""
        if isinstance(text, Site):
            return text
        if not isinstance(text, str):
            raise SiteError(f"A site is a Site or a string like 'L5.resid_pre', got {text!r}.")
        match = _PATTERN.match(text.strip())
        if match is None or match.group("kind") not in _KINDS:
            raise SiteError(
                f"Cannot parse site {text!r}. Write 'L<layer>.<kind>' with an optional '[h<head>]', "
                f"e.g. 'L5.resid_pre' or 'L3.attn.z[h7]'. Valid kinds: {choices(_KINDS)}."
            )
        layer = match.group("layer")
        head = match.group("head")
        return cls(
            None if layer is None else int(layer),
            _KINDS[match.group("kind")],
            None if head is None else int(head),
        )

    def with_head(self, head: int | None) -> Site:
        return Site(self.layer, self.kind, head)

    def __str__(self) -> str:
        text = self.kind.value if self.layer is None else f"L{self.layer}.{self.kind.value}"
        return text if self.head is None else f"{text}[h{self.head}]"

    def __repr__(self) -> str:
        return f"Site({str(self)!r})"


def as_sites(sites) -> list[Site]:
    """Normalise one site or an iterable of sites / strings into a list of ``Site``."""
    if isinstance(sites, (str, Site)):
        sites = [sites]
    return [Site.parse(s) for s in sites]
