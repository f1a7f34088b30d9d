"""The reference side of the integration tests: plain torch hooks on the HF modules, by name.

Nothing here goes through interplab's adapters. Each family's layout is spelled out from the
HF modeling files (transformers 5.x), so a wrong adapter mapping shows up as a mismatch
between interplab and these hand-written hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

Edit = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Layout:
    """Where each piece of one family's forward lives, as HF attribute paths."""

    layers: str  # the ModuleList of decoder blocks
    attn_add: str  # (in a block) module whose output[0] / output attention adds to the residual
    attn_add_tuple: bool  # whether that module returns a tuple
    mlp_add: str  # (in a block) module whose output the MLP adds to the residual
    o_proj: str  # (in a block) output projection; its input is z
    down_proj: str  # (in a block) MLP down projection; its input is mlp.hidden
    qkv: tuple[str, str, str] | str  # separate q/k/v projections, or the fused one
    fused: str | None  # None, "split" (GPT-2: [q | k | v]) or "per_head" (NeoX: [h, q k v])
    mlp_branch: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # block, resid_mid -> MLP share
    mid_norm: str  # (in a block) the norm whose input is resid_mid (also the MLP's residual)
    embed: str
    final_norm: str
    unembed: str


def _llama_mlp(block, x):
    return block.mlp(block.post_attention_layernorm(x))


def _gemma3_mlp(block, x):
    return block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(x)))


def _gpt2_mlp(block, x):
    return block.mlp(block.ln_2(x))


def _neox_mlp(block, x):
    return block.mlp(block.post_attention_layernorm(x))


_LLAMA = Layout(
    layers="model.layers", attn_add="self_attn", attn_add_tuple=True, mlp_add="mlp",
    o_proj="self_attn.o_proj", down_proj="mlp.down_proj",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), fused=None,
    mlp_branch=_llama_mlp, mid_norm="post_attention_layernorm", embed="model.embed_tokens",
    final_norm="model.norm", unembed="lm_head",
)
LAYOUTS = {
    "llama": _LLAMA,
    "qwen": _LLAMA,
    "gemma3": Layout(
        layers="model.layers", attn_add="post_attention_layernorm", attn_add_tuple=False,
        mlp_add="post_feedforward_layernorm", o_proj="self_attn.o_proj",
        down_proj="mlp.down_proj",
        qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), fused=None,
        mlp_branch=_gemma3_mlp, mid_norm="pre_feedforward_layernorm",
        embed="model.embed_tokens",  # Gemma3TextScaledWordEmbedding: scaled by sqrt(d_model)
        final_norm="model.norm", unembed="lm_head",
    ),
    "gpt2": Layout(
        layers="transformer.h", attn_add="attn", attn_add_tuple=True, mlp_add="mlp",
        o_proj="attn.c_proj", down_proj="mlp.c_proj", qkv="attn.c_attn", fused="split",
        mlp_branch=_gpt2_mlp, mid_norm="ln_2", embed="transformer.wte",
        final_norm="transformer.ln_f", unembed="lm_head",
    ),
    "neox": Layout(
        layers="gpt_neox.layers", attn_add="attention", attn_add_tuple=True, mlp_add="mlp",
        o_proj="attention.dense", down_proj="mlp.dense_4h_to_h",
        qkv="attention.query_key_value", fused="per_head", mlp_branch=_neox_mlp,
        mid_norm="post_attention_layernorm", embed="gpt_neox.embed_in",
        final_norm="gpt_neox.final_layer_norm", unembed="lm_head",
    ),
}


class Hand:
    """Plain torch hooks on one HF model, removed on exit."""

    def __init__(self, model: nn.Module, arch: str, n_heads: int, n_kv_heads: int, d_head: int):
        self.m, self.lay = model, LAYOUTS[arch]
        self.n_heads, self.n_kv, self.d_head = n_heads, n_kv_heads, d_head
        self.handles: list = []

    # -- modules ------------------------------------------------------------------------------
    def block(self, layer: int) -> nn.Module:
        return self.m.get_submodule(self.lay.layers)[layer]

    def sub(self, layer: int, path: str) -> nn.Module:
        return self.block(layer).get_submodule(path)

    # -- raw hooks ----------------------------------------------------------------------------
    def on_output(self, module: nn.Module, edit: Edit, tuple_out: bool = False) -> None:
        def hook(mod, args, out):
            if tuple_out:
                return (edit(out[0]), *out[1:])
            return edit(out)

        self.handles.append(module.register_forward_hook(hook))

    def on_input(self, module: nn.Module, edit: Edit) -> None:
        def pre(mod, args, kwargs):
            if args:
                return (edit(args[0]), *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = edit(kwargs["hidden_states"])
            return args, kwargs

        self.handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

    # -- sites, by hand -----------------------------------------------------------------------
    def embed(self, edit: Edit) -> None:
        self.on_output(self.m.get_submodule(self.lay.embed), edit)

    def ln_final(self, edit: Edit) -> None:
        self.on_output(self.m.get_submodule(self.lay.final_norm), edit)

    def logits(self, edit: Edit) -> None:
        self.on_output(self.m.get_submodule(self.lay.unembed), edit)

    def resid_pre(self, layer: int, edit: Edit) -> None:
        self.on_input(self.block(layer), edit)

    def resid_post(self, layer: int, edit: Edit) -> None:
        self.on_output(self.block(layer), edit)

    def attn_out(self, layer: int, edit: Edit) -> None:
        self.on_output(self.sub(layer, self.lay.attn_add), edit, self.lay.attn_add_tuple)

    def mlp_out(self, layer: int, edit: Edit) -> None:
        self.on_output(self.sub(layer, self.lay.mlp_add), edit)

    def mlp_hidden(self, layer: int, edit: Edit) -> None:
        self.on_input(self.sub(layer, self.lay.down_proj), edit)

    def z_head(self, layer: int, head: int, edit: Edit) -> None:
        d = self.d_head
        self.on_input(self.sub(layer, self.lay.o_proj), _slice_edit(head * d, (head + 1) * d, edit))

    def qkv_head(self, layer: int, which: str, head: int, edit: Edit) -> None:
        d, i = self.d_head, "qkv".index(which)
        if self.lay.fused is None:
            module = self.sub(layer, self.lay.qkv[i])
            self.on_output(module, _slice_edit(head * d, (head + 1) * d, edit))
        elif self.lay.fused == "split":  # GPT-2 c_attn: [q (n_heads*d) | k | v]
            start = i * self.n_heads * d + head * d
            self.on_output(self.sub(layer, self.lay.qkv), _slice_edit(start, start + d, edit))
        else:  # NeoX query_key_value: per head [q | k | v], each d wide
            start = head * 3 * d + i * d
            self.on_output(self.sub(layer, self.lay.qkv), _slice_edit(start, start + d, edit))

    def resid_mid(self, layer: int, edit: Edit) -> None:
        """Rewrite the block's output as HF computes it, with resid_mid edited:
        mid = resid_pre + attn_share; out = mid' + mlp_branch(mid')."""
        seen: dict = {}
        self.on_input(self.block(layer), lambda x: seen.__setitem__("pre", x) or x)
        self.on_output(
            self.sub(layer, self.lay.attn_add),
            lambda x: seen.__setitem__("attn", x) or x,
            self.lay.attn_add_tuple,
        )
        block = self.block(layer)

        def rebuild(out):
            mid = edit(seen["pre"] + seen["attn"])
            return mid + self.lay.mlp_branch(block, mid)

        self.on_output(block, rebuild)

    # -- capturing whole tensors for autograd, and reading a site's gradient from them -----
    def capture(self, site: str, store: dict) -> None:
        """Keep the raw HF tensor behind ``site`` (``L<l>.<kind>[h<h>]``) in ``store``."""
        def keep(x):
            x.retain_grad()
            store[site] = x
            return x

        if site in ("embed", "ln_final", "logits"):
            getattr(self, site)(keep)
            return
        layer, kind, _ = _parse(site)
        if kind in ("resid_post", "attn_out", "mlp_out"):
            getattr(self, kind)(layer, keep)
        elif kind == "resid_pre":
            self.on_input(self.block(layer), keep)
        elif kind == "resid_mid":  # the very tensor the block also adds the MLP's output to
            self.on_input(self.sub(layer, self.lay.mid_norm), keep)
        elif kind == "mlp.hidden":
            self.on_input(self.sub(layer, self.lay.down_proj), keep)
        elif kind == "attn.z":
            self.on_input(self.sub(layer, self.lay.o_proj), keep)
        elif kind in ("attn.q", "attn.k", "attn.v"):
            path = self.lay.qkv if self.lay.fused else self.lay.qkv["qkv".index(kind[-1])]
            self.on_output(self.sub(layer, path), keep)
        else:
            raise ValueError(site)

    def site_view(self, site: str, raw: torch.Tensor) -> torch.Tensor:
        """The site's activation (or gradient) inside the raw tensor ``capture`` kept."""
        if "." not in site:
            return raw
        _, kind, head = _parse(site)
        d = self.d_head
        if kind in ("attn.q", "attn.k", "attn.v"):
            i = "qkv".index(kind[-1])
            n = self.n_heads if kind == "attn.q" else self.n_kv
            if self.lay.fused == "split":
                raw = raw[..., i * self.n_heads * d: (i * self.n_heads + n) * d]
            elif self.lay.fused == "per_head":
                raw = raw.unflatten(-1, (self.n_heads, 3 * d))[..., i * d: (i + 1) * d].flatten(-2)
            raw = raw.unflatten(-1, (n, d))
        elif kind == "attn.z":
            raw = raw.unflatten(-1, (self.n_heads, d))
        return raw if head is None else raw[..., head, :]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def _parse(site: str) -> tuple[int, str, int | None]:
    layer, rest = site.split(".", 1)
    head = None
    if rest.endswith("]"):
        rest, h = rest[:-1].split("[h")
        head = int(h)
    return int(layer[1:]), rest, head


def _slice_edit(start: int, stop: int, edit: Edit) -> Edit:
    """Edit columns [start, stop) of the last axis, out of place."""

    def fn(x):
        x = x.clone()
        x[..., start:stop] = edit(x[..., start:stop])
        return x

    return fn


@contextlib.contextmanager
def hand_hooks(model, family) -> Iterator[Hand]:
    hand = Hand(model, family.arch, family.n_heads, family.n_kv_heads, family.d_head)
    try:
        yield hand
    finally:
        hand.remove()


def zero(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x)


def at_positions(positions, edit: Edit) -> Edit:
    """Apply ``edit`` at token indices ``positions`` (unpadded batch) of a [batch, pos, ...] tensor."""

    def fn(x):
        x = x.clone()
        x[:, list(positions)] = edit(x[:, list(positions)])
        return x

    return fn
