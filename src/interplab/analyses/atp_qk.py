"""AtP*'s QK fix: exact attention-pattern changes under a patched query or key, and the
metric's gradient with respect to the pattern.

Attribution patching linearises the metric through the attention softmax. Where a head's
softmax is saturated (one score far above the rest) the gradient into its queries and keys is
~0, although patching them moves the pattern -- and the metric -- a lot: AtP's false negative
of Kramár, Lieberum, Shah & Nanda 2024 ("AtP*: An efficient and scalable method for localizing
LLM behaviour to components", arXiv:2403.00745). Their "QK fix" keeps the softmax out of the
linearisation: for a query (key) node, recompute the attention pattern A' with that query (key)
replaced, and estimate the effect as ``sum_{t,s} dM/dA[t,s] (A'[t,s] − A[t,s])``.

How it is computed here. During the base run's forward (the one the gradients come from) the
call of every needed attention module is captured (its inputs, detached); the pattern is then
recomputed by calling that attention module *alone* on those inputs -- once as is, once with
every head's q replaced by the source's, once with every k replaced (each head's pattern depends
only on its own q and k, so one call serves all heads; a key/value head's k moves the patterns
of its query-head group). The family's own code thus applies its QK-norm, rotary embeddings,
scaling, soft-capping, masks and sliding windows: no formula is re-implemented. The gradient
with respect to the pattern needs no extra pass: ``z[t] = sum_s A[t,s] v[s]`` per head, so
``dM/dA[t,s] = dM/dz[t] . v[s]`` from the gradient at ``attn.z`` and the cached ``attn.v``
(checked: the recomputed base pattern times v must give the cached z).

Needs the eager attention kernel (the only one returning patterns) and caches nothing across
calls: a captured call is used while its forward's inputs are alive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from transformers.cache_utils import Cache

from interplab.core.errors import ConfigError, UnsupportedArchitectureError
from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind
from interplab.runtime import dispatch


def check_eager(model: Model) -> None:
    impl = getattr(model.hf.config, "_attn_implementation", None)
    if impl != "eager":
        raise ConfigError(
            f"The QK fix recomputes attention patterns, which the {impl!r} attention kernel does "
            "not return. Load the model with attn_implementation='eager' (interplab's default), "
            "or set qk_fix=False."
        )


def _detached(x):
    """Inputs of an attention call, detached; a key/value cache is dropped, so a replay
    neither reads nor extends it (the captured forward runs without past tokens)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, Cache):
        return None
    if isinstance(x, tuple):
        return tuple(_detached(v) for v in x)
    if isinstance(x, list):
        return [_detached(v) for v in x]
    if isinstance(x, dict):
        return {k: _detached(v) for k, v in x.items()}
    return x


@contextlib.contextmanager
def captured_attention(model: Model, layers: list[int]) -> Iterator[dict[int, tuple]]:
    """Record the (args, kwargs) of each listed layer's attention call in the forward run
    inside the block; the torch hooks are removed on exit."""
    calls: dict[int, tuple] = {}
    handles = []

    def recorder(layer: int):
        def hook(module, args, kwargs):
            calls[layer] = (_detached(args), _detached(kwargs))
        return hook

    try:
        for layer in layers:
            module = model.adapter.attn(layer)
            handles.append(module.register_forward_pre_hook(recorder(layer), with_kwargs=True))
        yield calls
    finally:
        for h in handles:
            h.remove()


def replay_pattern(model: Model, layer: int, call: tuple, site: Site | None = None,
                   value: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's attention pattern [batch, heads, q_pos, k_pos] from its attention module
    alone on the captured call, with the whole ``site`` (every head's q or k) set to ``value``."""
    args, kwargs = call
    handles = []
    try:
        if site is not None:
            handles = model.attach_site(site, lambda act: value.to(act), dispatch.INTERVENE, True)
        with torch.no_grad():
            out = model.adapter.attn(layer)(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    point = model.adapter.point(Site(layer, SiteKind.PATTERN))
    raw = out if point.out_index is None else out[point.out_index]
    if raw is None:
        check_eager(model)
        raise UnsupportedArchitectureError(f"Layer {layer}'s attention returned no pattern.")
    return point.get(raw)


def pattern_grad(model: Model, grad_z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """dM/dA [batch, heads, q, k] from dM/dz [batch, pos, heads, d_head] and v
    [batch, pos, kv_heads, d_head] (z = A v per head; query head h reads key/value head
    h // (heads / kv_heads), as HF's repeat_kv lays them out)."""
    v = v.double().repeat_interleave(grad_z.shape[2] // v.shape[2], dim=2)
    return torch.einsum("bthd,bshd->bhts", grad_z.double(), v)


def check_pattern(model: Model, layer: int, pattern: torch.Tensor, z: torch.Tensor,
                  v: torch.Tensor) -> None:
    """The recomputed base pattern must reproduce the cached z = A v, or dM/dA is wrong."""
    v = v.double().repeat_interleave(z.shape[2] // v.shape[2], dim=2)
    again = torch.einsum("bhts,bshd->bthd", pattern.double(), v)
    err = float((again - z.double()).abs().max())
    if err > 1e-4 * (1.0 + float(z.abs().max())):
        raise UnsupportedArchitectureError(
            f"Layer {layer}: the attention output is not pattern @ v (max difference {err:.3g}); "
            f"the QK fix cannot be used with the {model.adapter.name} adapter's attention. "
            "Set qk_fix=False."
        )


def pattern_changes(model: Model, layers: list[int], calls: dict[int, tuple], base_acts,
                    source_acts, which: tuple[str, ...]) -> dict[tuple[int, str], torch.Tensor]:
    """``{(layer, 'q' | 'k'): A' − A}`` for each layer and each of ``which``; A' is the pattern
    with every head's q (or k) from the source run. Checks A against the cached z."""
    out = {}
    for layer in layers:
        base = replay_pattern(model, layer, calls[layer]).double()
        check_pattern(model, layer, base, base_acts[Site(layer, SiteKind.Z)],
                      base_acts[Site(layer, SiteKind.V)])
        for w in which:
            site = Site(layer, SiteKind(f"attn.{w}"))
            patched = replay_pattern(model, layer, calls[layer], site, source_acts[site])
            out[(layer, w)] = patched.double() - base
    return out


def qk_cells(change: torch.Tensor, grad_a: torch.Tensor, which: str, n_kv_heads: int) -> torch.Tensor:
    """Per prompt and head, sum_{t,s} dM/dA (A' − A): [batch, heads] for queries, [batch,
    kv_heads] for keys (a key/value head sums over the query heads that read it)."""
    per_head = (grad_a * change).sum((2, 3))
    if which == "q":
        return per_head
    return per_head.unflatten(1, (n_kv_heads, -1)).sum(2)
