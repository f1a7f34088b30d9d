"""The toy family (``interplab-toy``, ``interplab.models.toy``): separate q/k/v/o, ReLU MLP.

``embed`` is the token embedding only; resid_pre of layer 0 adds the position embedding (as
GPT-2). ``ln_final`` is the final norm's output -- with ``normalization="none"`` an identity, so
``ln_final`` equals the last resid_post. An attention-only model (``d_mlp=0``) has no
``mlp_out``, ``mlp.hidden`` or ``resid_mid`` (which would equal resid_post); asking raises.
"""

from __future__ import annotations

from interplab.core.dims import ModelDims
from interplab.core.errors import SiteError
from interplab.core.sites import Site, SiteKind
from interplab.models.llama import DecoderAdapter
from interplab.models.registry import register_adapter
from interplab.models.toy import MODEL_TYPE, NORMALIZATION, POSITIONAL

_MLP_KINDS = (SiteKind.MLP_OUT, SiteKind.MLP_HIDDEN, SiteKind.RESID_MID)


@register_adapter
class ToyAdapter(DecoderAdapter):
    """The toy family uses Llama's module names, so the module accessors are DecoderAdapter's."""

    name = "toy"
    model_types = (MODEL_TYPE,)
    family_keys = frozenset(
        {
            "vocab_size", "n_ctx", "d_model", "n_layers", "n_heads", "d_head", "d_mlp",
            "positional", "normalization", "attn_scale", "bias", "layer_norm_eps", "causal",
        }
    )

    @classmethod
    def unsupported_values(cls, config) -> list[str]:
        bad = []
        if getattr(config, "normalization", "none") not in NORMALIZATION:
            bad.append(f"normalization={config.normalization!r} (supported: "
                       f"{', '.join(map(repr, NORMALIZATION))})")
        if getattr(config, "positional", "learned") not in POSITIONAL:
            bad.append(f"positional={config.positional!r} (supported: "
                       f"{', '.join(map(repr, POSITIONAL))})")
        return bad

    @classmethod
    def read_dims(cls, config) -> ModelDims:
        return ModelDims(
            n_layers=config.n_layers,
            d_model=config.d_model,
            n_heads=config.n_heads,
            n_kv_heads=config.n_heads,
            d_head=config.d_head,
            d_mlp=config.d_mlp,
            d_vocab=config.vocab_size,
        )

    def check_site(self, site: Site) -> None:
        super().check_site(site)
        if self.dims.d_mlp == 0 and site.kind in _MLP_KINDS:
            raise SiteError(
                f"Site {site}: this toy model is attention-only (d_mlp=0), so it has no MLP "
                "and no resid_mid (it would equal resid_post). Use resid_pre, resid_post or "
                "attn_out."
            )

