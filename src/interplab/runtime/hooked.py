"""HookedModel: one instrumented forward / backward pass over an unmodified HF model.

With nothing attached there is no hook on the model and ``run`` is the plain HF forward, bit for
bit. Hooks — interventions, caches, gradient taps — are attached for one call and removed in
``finally``; anything that satisfies the hook protocol (a ``site`` and ``__call__(act, ctx)``,
optionally ``check(info)`` and ``writes``) can be attached, which is how
``interplab.interventions`` plugs in without this layer importing it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import nn

from interplab.core.errors import InputError, InterventionError, PositionError, SiteError
from interplab.core.sites import Site, SiteKind, as_sites
from interplab.models.adapter import Adapter
from interplab.models.registry import adapter_for
from interplab.runtime import dispatch
from interplab.runtime.cache import ActivationCache
from interplab.runtime.context import CheckInfo, ForwardContext
from interplab.runtime.inputs import Batch, as_batch

log = logging.getLogger(__name__)

Logits = Float[torch.Tensor, "batch pos d_vocab"]
"""The model's logits (positions follow the attention mask; see ``runtime.inputs``)."""


class HookedModel:
    """An HF causal LM with typed sites, caching, per-row interventions and gradients."""

    def __init__(self, hf_model: nn.Module, tokenizer=None, adapter: Adapter | None = None,
                 source: dict | None = None) -> None:
        self.hf = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter = adapter or adapter_for(hf_model)
        self.dims = self.adapter.dims
        self.source = dict(source or {})
        self._dispatch = dispatch.Dispatcher()
        self._ctx: ForwardContext | None = None
        self._persistent: list = []
        self._mid: dict[tuple[int, str], torch.Tensor] = {}

    # -- basics ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def n_torch_hooks(self) -> int:
        """How many torch hooks interplab has on the model right now (0 when idle)."""
        return self._dispatch.n_torch_hooks

    @property
    def max_positions(self) -> int | None:
        """The longest sequence the model was built for (None when its config does not say)."""
        cfg = self.hf.config
        return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)

    def to_batch(self, inputs, extra_tokens: int = 0) -> Batch:
        """Inputs as a left-padded batch; refuses prompts (plus ``extra_tokens`` to be
        generated) longer than the model's positions, before any forward."""
        batch = as_batch(inputs, self.tokenizer, self.device)
        limit = self.max_positions
        if limit is not None and batch.input_ids.shape[1] + extra_tokens > limit:
            longest = int(batch.lengths.max())
            more = f" plus {extra_tokens} new tokens" if extra_tokens else ""
            raise InputError(f"A prompt of {longest} tokens{more} exceeds the model's {limit} positions "
                             f"({self.source.get('name') or type(self.hf).__name__}); shorten it"
                             f"{' or generate fewer tokens' if extra_tokens else ''}.")
        return batch

    def site(self, site: str | Site) -> Site:
        """Parse and check a site against this model (layer and head ranges)."""
        site = Site.parse(site)
        self.adapter.check_site(site)
        return site

    def site_shape(self, site: str | Site) -> tuple[int, ...]:
        return self.adapter.site_shape(Site.parse(site))

    def all_sites(self, kind: str | SiteKind) -> list[Site]:
        """One site per layer for a layered kind, e.g. every ``resid_post``."""
        return [Site(layer, SiteKind(kind)) for layer in range(self.dims.n_layers)]

    # -- forward passes ----------------------------------------------------------------------
    def run(self, inputs, interventions: Iterable = ()) -> Logits:
        """Logits [batch, pos, d_vocab] with the given interventions applied."""
        batch = self.to_batch(inputs)
        with self.attached(interventions, batch=batch), torch.no_grad():
            return self.forward_logits(batch)

    def run_with_cache(self, inputs, sites, interventions: Iterable = (), *,
                       positions: Sequence[int] | None = None, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None,
                       stop_after_last_site: bool = False,
                       ) -> tuple[torch.Tensor | None, ActivationCache]:
        """Logits and the activations at ``sites`` only (after interventions at that site).

        ``positions`` keeps just those token positions of each prompt (negative counts from
        the prompt's end), so memory is what was asked; ``dtype`` / ``device`` convert each
        activation as it is produced (e.g. bfloat16 on the CPU while the model runs on GPU).
        ``stop_after_last_site`` ends the forward as soon as every asked site is cached (the
        layers after the deepest one never run) and returns ``None`` for the logits; the
        cached activations are the full forward's, bit for bit.
        """
        batch = self.to_batch(inputs)
        sites = [self.site(s) for s in as_sites(sites)]
        pos = None if positions is None else tuple(int(p) for p in positions)
        if pos is not None:
            self._check_positions(pos, batch.lengths.tolist(), "cache positions")
        cache = ActivationCache(positions=pos, attention_mask=batch.attention_mask)
        handles = []
        try:
            for site in sites:
                fn = self.cache_hook(site, cache, pos, dtype, device)
                if stop_after_last_site:
                    fn = _stop_when_complete(fn, cache, len(set(sites)))
                handles += self.attach_site(site, fn, dispatch.CACHE, False)
            try:
                logits = self.run(batch, interventions)
            except _StopForward:
                logits = None
        finally:
            for h in handles:
                h.remove()
        return logits, cache

    def gradients(self, inputs, metric: Callable[[torch.Tensor, Batch], torch.Tensor], sites,
                  interventions: Iterable = ()):
        """The gradient of a scalar ``metric(logits, batch)`` at every site, from one backward.

        Returns a ``GradientResult``. Parameters are frozen for the call and the activation at
        the earliest asked hook point becomes a leaf, so autograd records only the graph
        downstream of what was asked.
        """
        from interplab.runtime.gradients import gradients

        return gradients(self, inputs, metric, sites, interventions)

    def generate(self, inputs, max_new_tokens: int = 20, interventions: Iterable = (), **kw):
        """Generate with interventions under the KV cache; see ``runtime.generate``."""
        from interplab.runtime.generate import generate

        return generate(self, inputs, max_new_tokens, interventions, **kw)

    # -- attachment --------------------------------------------------------------------------
    @contextlib.contextmanager
    def attached(self, hooks: Iterable = (), *, batch: Batch | None = None,
                 max_new_tokens: int = 0) -> Iterator[None]:
        """Attach hooks (interventions) for the body; every one is removed in ``finally``.

        With ``batch`` given, each hook also checks its rows and positions against it first.
        Hooks attached by an outer ``attached`` stay on (and are checked) inside it.
        """
        hooks = list(hooks)
        prepared = [self._prepare(h) for h in hooks]
        if batch is not None:
            for hook, site in [*self._persistent, *prepared]:
                self._check_hook(hook, site, batch, max_new_tokens)
        handles = []
        outer = batch is None
        try:
            for hook, site in prepared:
                handles += self.attach_site(
                    site, self._hook_fn(hook), dispatch.INTERVENE, getattr(hook, "writes", True)
                )
            if outer:
                self._persistent += prepared
            yield
        finally:
            for h in handles:
                h.remove()
            if outer:
                for item in prepared:
                    self._persistent.remove(item)

    def check(self, hooks: Iterable, batch: Batch, max_new_tokens: int = 0) -> None:
        """Check interventions against a batch (sites, rows, positions, value shapes) without
        attaching them: safe while another thread runs forwards on this model."""
        for hook, site in (self._prepare(h) for h in hooks):
            self._check_hook(hook, site, batch, max_new_tokens)

    def _prepare(self, hook) -> tuple[object, Site]:
        if not hasattr(hook, "site") or not callable(hook):
            raise InterventionError(
                f"{hook!r} is not an intervention: it needs a 'site' and a __call__(act, ctx). "
                "Use interplab.interventions (Patch, Ablate, Steer, Apply)."
            )
        site = self.site(hook.site)
        point = self.adapter.point(site)
        if getattr(hook, "writes", True) and not point.writable:
            raise InterventionError(f"Site {site} is read-only: {point.why_read_only}.")
        if site.kind == SiteKind.PATTERN:
            self._check_pattern_available(site)
        return hook, site

    def _check_hook(self, hook, site: Site, batch: Batch, max_new: int) -> None:
        check = getattr(hook, "check", None)
        if check is None:
            return
        lengths = tuple(batch.lengths.tolist())
        check(CheckInfo(site, self.site_shape(site), batch.shape[0], lengths,
                        tuple(n + max_new for n in lengths)))

    def _check_pattern_available(self, site: Site) -> None:
        impl = getattr(self.hf.config, "_attn_implementation", None)
        if impl != "eager":
            raise SiteError(
                f"Site {site} needs attention probabilities, which the {impl!r} attention "
                "kernel does not return. Load the model with attn_implementation='eager' "
                "(interplab's default)."
            )

    @staticmethod
    def _check_positions(pos: Sequence[int], lengths: list[int], what: str) -> None:
        shortest = min(lengths)
        bad = [p for p in pos if not -shortest <= p < shortest]
        if bad:
            raise PositionError(
                f"{what} {bad} out of range: the shortest prompt has {shortest} tokens, so "
                f"valid positions are {-shortest}..{shortest - 1}."
            )

    # -- entries on hook points --------------------------------------------------------------
    # -- the small public interface the runtime's other modules (gradients, generate, prefix
    # reuse) build on: attach one hook at a site, make a cache hook, run one HF forward. -------
    def attach_site(self, site: Site, fn, priority: int, writes: bool) -> list:
        """Attach ``fn(act) -> act | None`` at ``site`` for the current call; returns the torch
        handles to remove (in ``finally``)."""
        point = self.adapter.point(site)
        if site.kind == SiteKind.PATTERN:
            self._check_pattern_available(site)
        head, axis = site.head, point.head_axis

        def entry(raw: torch.Tensor):
            full = point.get(raw)
            act = full if head is None else full.select(axis, head)
            new = fn(act)
            if new is None or new is act or not writes:
                return None
            if head is not None:
                whole = full.clone()
                whole.select(axis, head).copy_(new)
                new = whole
            return point.put(raw, new)

        handles = [self._dispatch.add(point, entry, priority)]
        if writes and site.kind == SiteKind.RESID_MID:
            handles += self._attach_mid_fix(site.layer)
        return handles

    def _attach_mid_fix(self, layer: int) -> list:
        """A write at resid_mid must also reach the residual branch the block adds the MLP to:
        record the final resid_mid and MLP output, then rebuild the block output as
        ``resid_mid + mlp_out`` — the same sum the HF block computes, so it is bit-exact."""
        a = self.adapter
        mid_pt = a.point(Site(layer, SiteKind.RESID_MID))
        mlp_pt = a.point(Site(layer, SiteKind.MLP_OUT))
        out_pt = a.point(Site(layer, SiteKind.RESID_POST))

        def record(key):
            def fn(raw):
                self._mid[(layer, key)] = raw
            return fn

        def fix(raw):
            mid, mlp = self._mid.pop((layer, "mid"), None), self._mid.pop((layer, "mlp"), None)
            return None if mid is None or mlp is None else mid + mlp

        return [
            self._dispatch.add(mid_pt, record("mid"), dispatch.STASH),
            self._dispatch.add(mlp_pt, record("mlp"), dispatch.STASH),
            self._dispatch.add(out_pt, fix, dispatch.FIX),
        ]

    def _hook_fn(self, hook):
        def fn(act):
            if self._ctx is None:
                raise InterventionError(
                    "An interplab intervention fired outside HookedModel.run / run_with_cache / "
                    "gradients / generate, so it has no positions to act on. Call the forward "
                    "through HookedModel."
                )
            return hook(act, self._ctx)
        return fn

    def cache_hook(self, site, cache: ActivationCache, pos, dtype, device):
        """A hook function that stores ``site``'s activation (at ``pos``) into ``cache``."""
        def fn(act):
            act = act.detach()
            if pos is not None:
                act = self._gather_positions(act, pos, site)
            if dtype is not None or device is not None:
                act = act.to(device=device or act.device, dtype=dtype or act.dtype)
            elif pos is None:
                act = act.clone()  # never alias a buffer the model may reuse
            cache.acts[site] = act
        return fn

    def _gather_positions(self, act: torch.Tensor, pos, site: Site) -> torch.Tensor:
        ctx = self._ctx
        row, seq, _, key = ctx.locate(None, pos, act.device)
        seq_idx = torch.zeros(ctx.batch_size, len(pos), dtype=torch.long, device=act.device)
        seq_idx[row, key] = seq  # every (row, position) is present: checked before the forward
        axis = act.ndim - 2 if site.kind == SiteKind.PATTERN else 1
        moved = act.movedim(axis, 1)
        rows = torch.arange(ctx.batch_size, device=act.device)[:, None]
        return moved[rows, seq_idx].movedim(1, axis)

    # -- the forward itself ------------------------------------------------------------------
    def forward_logits(self, batch: Batch) -> Logits:
        """The logits of one full forward over ``batch`` with whatever hooks are attached."""
        ctx = ForwardContext(batch.positions, batch.lengths, "full")
        # No use_cache override: HF's default (config.use_cache) changes the key/value layout
        # the attention matmuls see, so forcing it off would break bit-identity with m(ids).
        return self.call_hf(ctx, **batch.hf_kwargs()).logits

    def call_hf(self, ctx: ForwardContext, **hf_kwargs):
        """One HF forward with ``ctx`` visible to every hook; per-forward state is cleared."""
        self._ctx = ctx
        self._mid.clear()
        try:
            return self.hf(**hf_kwargs)
        finally:
            self._ctx = None
            self._mid.clear()

    def __repr__(self) -> str:
        d = self.dims
        return (
            f"HookedModel({self.source.get('name', type(self.hf).__name__)}: {self.adapter.name}, "
            f"{d.n_layers} layers, d_model={d.d_model}, heads={d.n_heads}/{d.n_kv_heads})"
        )


class _StopForward(Exception):
    """Raised from a cache hook once every asked site is cached, to end the forward early."""


def _stop_when_complete(fn, cache: ActivationCache, n_sites: int):
    def stop(act):
        fn(act)
        if len(cache.acts) >= n_sites:
            raise _StopForward
    return stop
