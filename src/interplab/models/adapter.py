"""The adapter base class: canonical sites onto one HF model family's modules.

An adapter knows the module layout of one family (``blocks``, ``attn``, ``mlp`` ...), reads the
dimensions from the config, and refuses — before any work — a config with keys it does not
understand (DESIGN rule 3). The site → ``HookPoint`` mapping is shared here; a family only names
its modules and, where its projections are fused, how q / k / v sit in them.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from interplab.core.dims import ModelDims
from interplab.core.errors import SiteError, UnsupportedArchitectureError
from interplab.core.sites import Site, SiteKind
from interplab.models.hookpoint import HookPoint, heads

# Keys every HF config may carry that do not change the computation.
NEUTRAL_KEYS = frozenset(
    {
        "_name_or_path", "_model_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype",
        "id2label", "label2id", "is_encoder_decoder", "model_type", "output_attentions",
        "output_hidden_states", "problem_type", "return_dict", "transformers_version",
        "bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "sep_token_id",
        "initializer_range", "use_cache", "tokenizer_class", "task_specific_params",
        "quantization_config", "max_position_embeddings", "tie_word_embeddings",
        "attention_dropout", "_attn_implementation_autoset", "finetuning_task", "prefix",
        "decoder_start_token_id", "is_decoder", "classifier_dropout", "cache_implementation",
    }
)


class Adapter:
    """Maps sites onto the modules of one HF causal-LM family. Subclass and register."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    family_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, model: nn.Module) -> None:
        self.check_config(model.config)
        self.model = model
        self.config = model.config
        self.dims = self.read_dims(model.config)

    # -- refusing what we do not understand -------------------------------------------------
    @classmethod
    def check_config(cls, config) -> None:
        """Raise naming every config key this adapter does not handle, before any work."""
        unknown = sorted(set(config.to_dict()) - NEUTRAL_KEYS - cls.family_keys)
        problems = [f"{k}={getattr(config, k, None)!r}" for k in unknown]
        problems += cls.unsupported_values(config)
        if problems:
            raise UnsupportedArchitectureError(
                f"The {cls.name} adapter does not handle these config entries: "
                f"{', '.join(problems)}. interplab refuses rather than risk hooks that silently "
                "miss part of the computation. Remove them from config.json if they are inert, "
                "or add support in the adapter (src/interplab/models/)."
            )

    @classmethod
    def unsupported_values(cls, config) -> list[str]:
        """Known keys whose value this adapter cannot honour; override per family."""
        return []

    @classmethod
    def read_dims(cls, config) -> ModelDims:
        raise NotImplementedError

    # -- the family's module layout ---------------------------------------------------------
    def blocks(self) -> nn.ModuleList:
        raise NotImplementedError

    def embed(self) -> nn.Module:
        raise NotImplementedError

    def final_norm(self) -> nn.Module:
        raise NotImplementedError

    def unembed(self) -> nn.Module:
        return self.model.lm_head

    def attn(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def attn_out_point(self, layer: int) -> HookPoint:
        """Where what attention adds to the residual stream is produced."""
        return HookPoint(self.attn(layer), "out", out_index=0)

    def mlp(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def mlp_branch(self, layer: int) -> nn.Module:
        """The module whose output the block adds to the residual as the MLP's share."""
        return self.mlp(layer)

    def mlp_norm(self, layer: int) -> nn.Module:
        """The norm whose input is resid_mid."""
        raise NotImplementedError

    def out_proj(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def down_proj(self, layer: int) -> nn.Module:
        raise NotImplementedError

    def qkv_point(self, layer: int, which: str) -> HookPoint:
        raise NotImplementedError

    def parallel_residual(self, layer: int) -> bool:
        return False

    def layers_owner(self) -> tuple[nn.Module, str] | None:
        """(module, attribute) holding the block list, when the HF forward can run a tail of
        the blocks from ``inputs_embeds`` = a cached resid_pre unchanged (the sweeps use it to
        skip the layers before a patch). None where the forward adds to the embeddings
        (GPT-2's positions) or indexes per-layer tables by loop position (Gemma 3, Qwen)."""
        return None

    # -- the shared mapping -----------------------------------------------------------------
    def check_site(self, site: Site) -> None:
        d = self.dims
        if site.layer is not None and site.layer >= d.n_layers:
            raise SiteError(
                f"Site {site}: layer {site.layer} is out of range; this model has "
                f"{d.n_layers} layers (valid: 0..{d.n_layers - 1})."
            )
        if site.head is not None:
            n = d.n_kv_heads if site.kind in (SiteKind.K, SiteKind.V) else d.n_heads
            if site.head >= n:
                what = "key/value heads" if n == d.n_kv_heads and n != d.n_heads else "heads"
                raise SiteError(
                    f"Site {site}: head {site.head} is out of range; this model has {n} {what} "
                    f"(valid: 0..{n - 1})."
                )
        if site.kind == SiteKind.RESID_MID and self.parallel_residual(site.layer):
            raise SiteError(
                f"Site {site}: this model uses a parallel residual (attention and MLP read the "
                "same resid_pre), so there is no resid_mid. Use resid_pre, attn_out or mlp_out."
            )

    def point(self, site: Site) -> HookPoint:
        """The hook point of a site (per-head sites share the point of their whole kind)."""
        self.check_site(site)
        d, k, layer = self.dims, site.kind, site.layer
        if k == SiteKind.EMBED:
            return HookPoint(self.embed(), "out")
        if k == SiteKind.LN_FINAL:
            return HookPoint(self.final_norm(), "out")
        if k == SiteKind.LOGITS:
            return HookPoint(self.unembed(), "out")
        if k == SiteKind.RESID_PRE:
            return HookPoint(self.blocks()[layer], "in")
        if k == SiteKind.RESID_POST:
            return HookPoint(self.blocks()[layer], "out", out_index=self._block_out_index())
        if k == SiteKind.RESID_MID:
            return HookPoint(self.mlp_norm(layer), "in")
        if k == SiteKind.ATTN_OUT:
            return self.attn_out_point(layer)
        if k == SiteKind.MLP_OUT:
            return HookPoint(self.mlp_branch(layer), "out")
        if k == SiteKind.MLP_HIDDEN:
            return HookPoint(self.down_proj(layer), "in")
        if k == SiteKind.Z:
            return HookPoint(self.out_proj(layer), "in", **heads(d.n_heads, d.d_head))
        if k in (SiteKind.Q, SiteKind.K, SiteKind.V):
            return self.qkv_point(layer, k.value[-1])
        if k == SiteKind.PATTERN:
            return HookPoint(
                self.attn(layer), "out", out_index=1, head_axis=1, writable=False,
                why_read_only="attention patterns are read-only in this version; edit q, k, "
                "v or z instead",
            )
        raise SiteError(f"Site kind {k.value!r} has no mapping in the {self.name} adapter.")

    def _block_out_index(self) -> int | None:
        return None

    def site_shape(self, site: Site) -> tuple[int, ...]:
        """Trailing shape of a site's activation after [batch, pos] (pattern: after [batch])."""
        d, k = self.dims, site.kind
        self.check_site(site)
        if k in (SiteKind.Q, SiteKind.Z):
            return (d.d_head,) if site.head is not None else (d.n_heads, d.d_head)
        if k in (SiteKind.K, SiteKind.V):
            return (d.d_head,) if site.head is not None else (d.n_kv_heads, d.d_head)
        if k == SiteKind.MLP_HIDDEN:
            return (d.d_mlp,)
        if k == SiteKind.LOGITS:
            return (d.d_vocab,)
        if k == SiteKind.PATTERN:
            return () if site.head is not None else (d.n_heads,)
        return (d.d_model,)

    # -- pieces the analyses reuse ----------------------------------------------------------
    def apply_final_norm(self, resid: torch.Tensor) -> torch.Tensor:
        return self.final_norm()(resid)

    def apply_unembed(self, x: torch.Tensor) -> torch.Tensor:
        return self.unembed()(x)
