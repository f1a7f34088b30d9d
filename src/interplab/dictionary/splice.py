"""Splicing a dictionary into the model: the hooks that replace an activation by its
reconstruction (or by zero, the floor), and record what the dictionary saw on the way.

For an SAE one ``Apply`` at ``input_site`` replaces x by ``forward(x)``. For a transcoder a
read-only hook at ``input_site`` stores x and an ``Apply`` at the (later) ``target_site``
returns ``forward(stored x)``; the input site comes earlier in the forward and nothing upstream
of it is changed, so both x and the target it sees are the clean activations. The same
forward therefore yields the spliced logits and, in a ``SpliceRecord``, the input, the target,
the latents and the reconstruction — the reconstruction metrics need no extra pass.

Contexts are unpadded ``[batch, ctx]`` token ids, so the hooks see every token, in row-major
order; ``keep`` (bool ``[batch * ctx]``) picks the tokens the dictionary acts on (the others,
e.g. BOS positions, keep the model's own activation in the spliced and the zero-ablated run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from interplab.core.errors import ConfigError, InputError, InterventionError
from interplab.core.model import Model
from interplab.core.sites import Site
from interplab.dictionary.base import Dictionary
from interplab.interventions.spec import Apply


@dataclass
class SpliceRecord:
    """What one spliced forward saw, flattened over tokens ``[batch * ctx, d]``."""

    x: Tensor | None = None
    target: Tensor | None = None
    z: Tensor | None = None
    recon: Tensor | None = None
    stash: dict = field(default_factory=dict)


class _Store:
    """A read-only hook (``writes = False``): keeps the activation at ``site`` for a later hook."""

    writes = False

    def __init__(self, site: Site | str, record: SpliceRecord) -> None:
        self.site = Site.parse(site)
        self.record = record

    def __call__(self, act: Tensor, ctx) -> None:
        # A copy: the model may reuse the buffer before the target site reads it.
        self.record.stash["x"] = act.reshape(-1, act.shape[-1]).clone()
        return None


def _dict_device(dictionary: Dictionary) -> torch.device:
    return dictionary.W_dec.device


def _reconstruct(dictionary: Dictionary, x: Tensor, target: Tensor, keep: Tensor | None,
                 record: SpliceRecord | None) -> Tensor:
    """``forward(x)`` where ``keep``, the target elsewhere; fills ``record``."""
    dev = _dict_device(dictionary)
    xd = x.to(dev)
    recon = dictionary(xd).to(device=target.device, dtype=target.dtype)
    if record is not None:
        record.x, record.target = x.detach(), target.detach()
        record.z = dictionary.encode(xd).detach()  # encode again: honest for any forward override
        record.recon = recon.detach()
    if keep is None:
        return recon
    return torch.where(keep.to(target.device)[:, None], recon, target)


def splice_hooks(dictionary: Dictionary, keep: Tensor | None = None,
                 record: SpliceRecord | None = None) -> list:
    """Interventions that splice ``dictionary`` in (see the module docstring)."""
    cfg = dictionary.cfg
    if cfg.target_site == cfg.input_site:
        def replace(current: Tensor) -> Tensor:
            return _reconstruct(dictionary, current, current, keep, record)

        return [Apply(cfg.input_site, fn=replace)]

    holder = record if record is not None else SpliceRecord()

    def transcode(current: Tensor) -> Tensor:
        x = holder.stash.pop("x", None)
        if x is None:
            raise InterventionError(
                f"Transcoder splice: the target site {cfg.target_site} ran before the input site "
                f"{cfg.input_site} stored its activation. The input site must come earlier in the "
                "forward pass than the target site."
            )
        return _reconstruct(dictionary, x, current, keep, record)

    return [_Store(cfg.input_site, holder), Apply(cfg.target_site, fn=transcode)]


def zero_hooks(dictionary: Dictionary, keep: Tensor | None = None) -> list:
    """Zero-ablate the dictionary's target site (where ``keep``): the floor of loss recovered."""

    def zero(current: Tensor) -> Tensor:
        if keep is None:
            return torch.zeros_like(current)
        return torch.where(keep.to(current.device)[:, None], torch.zeros_like(current), current)

    return [Apply(dictionary.cfg.target_site, fn=zero)]


def spliced_logits(model: Model, dictionary: Dictionary, tokens: Tensor, keep: Tensor | None = None
                   ) -> tuple[Tensor, SpliceRecord]:
    """Logits ``[batch, ctx, d_vocab]`` of ``model`` (a HookedModel) with the dictionary
    spliced in, and the record of what it saw."""
    record = SpliceRecord()
    with torch.no_grad():
        logits = model.run(tokens, splice_hooks(dictionary, keep, record))
    return logits, record


# -- checks shared by evaluate and features: refuse before any forward pass -------------------
def check_sites(model: Model, dictionary: Dictionary, need_target: bool = True) -> None:
    """The dictionary's sites exist on ``model`` and its widths are the sites' widths."""
    cfg = dictionary.cfg
    if not cfg.input_site:
        raise ConfigError(
            "The dictionary names no input_site, so there is nowhere to read its input. Set "
            "DictionaryConfig.input_site (e.g. 'L3.resid_post') when building or converting it."
        )
    pairs = [("input", cfg.input_site, cfg.d_in)]
    if need_target:
        pairs.append(("target", cfg.target_site, cfg.width_out))
    for what, name, width in pairs:
        site = model.site(name)  # raises SiteError naming the valid range
        shape = tuple(model.site_shape(site))
        if shape != (width,):
            raise ConfigError(
                f"The dictionary's {what} site {site} has per-token shape {list(shape)} on this "
                f"model, but the dictionary expects width {width}. Use a dictionary trained on "
                f"this model's {site}, or pick the site it was trained on."
            )


def check_contexts(model: Model, contexts: Tensor, min_len: int = 1) -> Tensor:
    """``contexts`` as an unpadded ``[n, ctx]`` long tensor of ids within the vocabulary."""
    if not isinstance(contexts, Tensor) or contexts.ndim != 2:
        got = tuple(contexts.shape) if isinstance(contexts, Tensor) else type(contexts).__name__
        raise InputError(
            f"Contexts must be a LongTensor [n_contexts, ctx_len] of token ids; got {got}."
        )
    if contexts.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise InputError(f"Contexts must hold integer token ids; got dtype {contexts.dtype}.")
    n, t = contexts.shape
    if n == 0 or t < min_len:
        raise InputError(
            f"Contexts of shape {(n, t)}: need at least one context of at least {min_len} tokens."
        )
    vocab = model.dims.d_vocab
    lo, hi = int(contexts.min()), int(contexts.max())
    if lo < 0 or hi >= vocab:
        raise InputError(
            f"Context token ids range over {lo}..{hi}, but this model's vocabulary is 0..{vocab - 1}. "
            "Tokenize with this model's tokenizer."
        )
    return contexts.long()


def bos_id(model: Model) -> int | None:
    """The model's BOS token id (tokenizer first, then the HF config), or None."""
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    if bos is None:
        bos = getattr(model.hf.config, "bos_token_id", None)
    return None if bos is None else int(bos)
