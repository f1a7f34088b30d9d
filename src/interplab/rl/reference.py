"""Reading a model's internals on (prompt, completion) pairs, for rewards.

``InternalsReader`` runs one no-grad forward over a batch of prompt + completion token
sequences and hands back each example's activations at the completion's positions only.

By default it reads a *frozen copy* of the model made at construction (``frozen=True``): a deep
copy in eval mode with ``requires_grad`` off, so the reward is the reference model's judgement
of the text, no gradient ever reaches it, and the policy's updates never move it. Reading the
policy itself (``frozen=False``) is possible but more hackable: the policy can then change the
activations the detector reads without changing its text ("obfuscated activations", Bailey et
al. 2024), so a reward on its own internals rewards representation drift as well as behaviour.

Tokenisation: the prompt is tokenized as the model's ``to_batch`` would (with the tokenizer's
special tokens) and the completion on its own without special tokens, and the two id lists are
concatenated — the layout TRL's GRPO uses (prompt ids, then generated ids), with an exact
boundary, where tokenizing the joined string could merge a token across it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from interplab.core.errors import ConfigError, InputError, SiteError
from interplab.core.sites import Site, SiteKind, as_sites
from interplab.runtime.inputs import batch_from_ids

from .base import _short


class InternalsReader:
    """Reads activations of ``model`` (a HookedModel) on completions, batched, without grad."""

    def __init__(self, model, frozen: bool = True) -> None:
        if not hasattr(model, "run_with_cache") or not hasattr(model, "hf"):
            raise InputError(f"InternalsReader needs an interplab HookedModel (interplab.load(...) "
                             f"or HookedModel(hf, tokenizer)); got {type(model).__name__}.")
        if model.tokenizer is None:
            raise InputError("InternalsReader needs a model with a tokenizer: rewards read text.")
        self.frozen = bool(frozen)
        if self.frozen:
            # Copy the whole HookedModel so its adapter points at the copied modules; share the
            # tokenizer (immutable in use, and large).
            model = copy.deepcopy(model, memo={id(model.tokenizer): model.tokenizer})
            model.hf.eval()
            model.hf.requires_grad_(False)
        self.model = model
        self.tokenizer = model.tokenizer

    # -- checks ---------------------------------------------------------------------------------
    def check_site(self, site, what: str, width: int | None = None) -> Site:
        """``site`` parsed and checked against the model (ConfigError naming ``what``), and, with
        ``width``, that the site's activation is a vector of that width."""
        try:
            site = Site.parse(site)
        except (SiteError, ValueError, KeyError) as e:
            raise ConfigError(f"{what} reads site {site!r}, which is not a site name: {e}") from None
        dims = self.model.dims
        if site.layer is not None and site.layer >= dims.n_layers:
            raise ConfigError(f"{what} reads {site} but the model has {dims.n_layers} layers "
                              f"(valid 0..{dims.n_layers - 1}).")
        try:
            site = self.model.site(site)
            shape = tuple(self.model.site_shape(site))
        except SiteError as e:
            raise ConfigError(f"{what} reads {site}, which this model lacks: {e}") from None
        if len(shape) != 1:
            raise ConfigError(f"{what} reads {site}, whose activation per token is "
                              f"{'x'.join(map(str, shape)) or 'a scalar'}, not a vector; use a "
                              "per-head site (e.g. L0.attn.z[h1]) or a residual site.")
        if width is not None and width != shape[0]:
            raise ConfigError(f"{what} at {site} has width {width}, the site has "
                              f"{_dim_name(site)}={shape[0]}; it was made for another model or "
                              "site.")
        return site

    # -- reading --------------------------------------------------------------------------------
    def token_ids(self, prompts: Sequence[str], completions: Sequence[str],
                  ) -> tuple[list[list[int]], list[list[int]]]:
        """Prompt ids (with special tokens) and completion ids (without), per example."""
        tok = self.tokenizer
        p_ids = [list(tok(p)["input_ids"]) for p in prompts]
        c_ids = [list(tok(c, add_special_tokens=False)["input_ids"]) for c in completions]
        for i, c in enumerate(c_ids):
            if not c:
                raise InputError(f"Completion {i} is empty (it tokenizes to no tokens; prompt "
                                 f"{_short(prompts[i])}); a reward from internals needs at least "
                                 "one completion token.")
        return p_ids, c_ids

    @torch.no_grad()
    def completion_acts(self, prompts: Sequence[str], completions: Sequence[str], sites,
                        ) -> list[dict[Site, torch.Tensor]]:
        """Per example, ``{site: [n_completion_tokens, *site_shape]}`` (float32, CPU), from one
        left-padded forward over all pairs."""
        if len(prompts) != len(completions):
            raise InputError(f"{len(prompts)} prompts but {len(completions)} completions.")
        if len(prompts) == 0:
            return []
        sites = [self.model.site(s) for s in as_sites(sites)]
        p_ids, c_ids = self.token_ids(prompts, completions)
        rows = [p + c for p, c in zip(p_ids, c_ids, strict=True)]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        batch = self.model.to_batch(batch_from_ids(ids.to(self.model.device),
                                                   mask.to(self.model.device)))
        _, cache = self.model.run_with_cache(batch, sites, stop_after_last_site=True)
        out = []
        for i, c in enumerate(c_ids):
            out.append({s: cache[s][i, width - len(c):].detach().float().cpu() for s in sites})
        return out

    def completion_tokens(self, completion: str) -> list[str]:
        """The completion's tokens as strings (each id decoded on its own)."""
        ids = self.tokenizer(completion, add_special_tokens=False)["input_ids"]
        return [self.tokenizer.decode([i]) for i in ids]


def _dim_name(site: Site) -> str:
    if site.kind == SiteKind.MLP_HIDDEN:
        return "d_mlp"
    if site.kind in (SiteKind.Q, SiteKind.K, SiteKind.V, SiteKind.Z):
        return "d_head"
    if site.kind == SiteKind.LOGITS:
        return "d_vocab"
    return "d_model"
