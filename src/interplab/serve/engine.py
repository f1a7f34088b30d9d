"""Continuous batching: many requests, each with its own interventions, in one forward per step.

A request is prefilled alone (a batch of one: its prompt's states are exactly a solo run's),
then joins the running batch: its KV cache is left-padded to the batch's length and stacked
onto it. Every decode step runs one forward over every active row; each request's
interventions are bound to its current row (``rows=(b,)``) for that step, with positions
meaning token positions of its own sequence (``runtime.generate``'s semantics). Rows leave
between steps (finished, cancelled, client gone) and their cache rows are dropped, so a short
request never waits for a long one. The loop runs in one background thread; callers read a
``Handle``'s events from any thread.

Isolation: nothing is shared between rows but the forward itself. A row's activations,
logits and sampler (its own seeded generator) are sliced from the batch by its own index,
which is recomputed whenever rows join or leave.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from interplab.core.errors import InputError
from interplab.core.sites import Site
from interplab.runtime.cache import ActivationCache
from interplab.runtime.context import ForwardContext
from interplab.runtime.dispatch import CACHE
from interplab.runtime.inputs import batch_from_ids


class QueueFull(Exception):
    """The engine's waiting queue is at its bound; retry later."""


@dataclass
class GenRequest:
    """One generation: prompt token ids, how to sample, what to edit and what to record."""

    prompt: list[int]
    max_new_tokens: int = 16
    interventions: list = field(default_factory=list)  # rows=None: the request's own sequence
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0
    capture: list[Site] = field(default_factory=list)  # sites recorded for every token
    top_logprobs: int = 0
    stop_ids: frozenset[int] = frozenset()
    keep_logits: bool = False  # return every step's logits in Finished (d_vocab floats a token)


@dataclass
class Step:
    """One new token: its id, log-probability and the top alternatives (id, logprob)."""

    token: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Finished:
    """The end of a request: all tokens, why it stopped, and the recorded activations
    {site: [prompt + new tokens (the last new token's activations are not computed), *shape]}."""

    tokens: list[int]
    reason: str  # "length", "stop" or "cancelled"
    activations: dict[Site, torch.Tensor]
    logits: torch.Tensor  # [new, d_vocab] float32, each new token's distribution (keep_logits)


class Handle:
    """A submitted request: ``events()`` yields Step ... then one Finished (or raises the error
    the engine met); ``cancel()`` frees its row at the next step."""

    def __init__(self, request: GenRequest):
        self.request = request
        self._events: queue.Queue = queue.Queue()
        self.cancelled = threading.Event()
        self.submitted = time.perf_counter()

    def cancel(self) -> None:
        self.cancelled.set()

    def events(self, timeout: float | None = None):
        while True:
            item = self._events.get(timeout=timeout)
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, Finished):
                return

    def result(self, timeout: float | None = None) -> Finished:
        for item in self.events(timeout):
            if isinstance(item, Finished):
                return item
        raise RuntimeError("the engine ended the request without a result")


@dataclass
class _Row:
    handle: Handle
    ids: list[int]
    prompt_len: int
    generator: torch.Generator
    captured: dict[Site, list[torch.Tensor]]
    logits: list[torch.Tensor] = field(default_factory=list)

    @property
    def request(self) -> GenRequest:
        return self.handle.request


@dataclass
class EngineStats:
    queue_depth: int = 0
    active: int = 0
    steps: int = 0
    tokens: int = 0
    batch_sizes: deque = field(default_factory=lambda: deque(maxlen=256))
    latencies: deque = field(default_factory=lambda: deque(maxlen=1024))  # seconds per finished request


class Engine:
    """The continuous-batching loop over one model (see the module docstring)."""

    def __init__(self, model, max_batch: int = 32, max_queue: int = 256):
        if max_batch < 1 or max_queue < 1:
            raise InputError(f"max_batch and max_queue must be >= 1; got {max_batch}, {max_queue}.")
        self.model, self.max_batch, self.max_queue = model, max_batch, max_queue
        self.stats = EngineStats()
        self._waiting: deque[Handle] = deque()
        self._rows: list[_Row] = []
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._mask: torch.Tensor | None = None  # [rows, cache length], left padding
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="interplab-engine", daemon=True)
        self._thread.start()

    # -- the callers' side ---------------------------------------------------------------------
    def check(self, request: GenRequest) -> None:
        """Refuse a request the forward would fail on, before it queues: empty prompt, bad
        sampling settings, unknown sites, interventions that do not fit its sequence."""
        if not request.prompt:
            raise InputError("prompt: at least one token is needed.")
        if request.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}.")
        if request.do_sample and request.temperature <= 0:
            raise InputError(f"temperature must be > 0 when sampling, got {request.temperature}.")
        context = getattr(self.model.hf.config, "max_position_embeddings", None)
        if context and len(request.prompt) + request.max_new_tokens > context:
            raise InputError(f"max_new_tokens: the prompt's {len(request.prompt)} tokens plus "
                             f"{request.max_new_tokens} new ones exceed the model's context of {context}.")
        vocab = self.model.dims.d_vocab
        if min(request.prompt) < 0 or max(request.prompt) >= vocab:
            raise InputError(f"prompt: token ids must be in 0..{vocab - 1}.")
        for site in request.capture:
            self.model.site(site)
        batch = batch_from_ids(torch.tensor([request.prompt]))
        self.model.check(request.interventions, batch, request.max_new_tokens)

    def submit(self, request: GenRequest) -> Handle:
        self.check(request)
        handle = Handle(request)
        with self._lock:
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting (max_queue={self.max_queue}).")
            self._waiting.append(handle)
            self.stats.queue_depth = len(self._waiting)
            self._lock.notify()
        return handle

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout=30)

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._waiting and not self._rows:
                    self._lock.wait()
                if self._stop:
                    break
                joining = []
                while self._waiting and len(self._rows) + len(joining) < self.max_batch:
                    joining.append(self._waiting.popleft())
                self.stats.queue_depth = len(self._waiting)
            try:
                for handle in joining:
                    self._join(handle)
                self._drop_finished()
                if self._rows:
                    self._decode()
                    self._drop_finished()
            except Exception as err:  # a failed forward fails its requests, not the server
                for row in self._rows:
                    row.handle._events.put(err)
                self._rows, self._kv, self._mask = [], None, None
            self.stats.active = len(self._rows)
        for row in self._rows:
            row.handle._events.put(RuntimeError("the server is shutting down"))
        for handle in self._waiting:
            handle._events.put(RuntimeError("the server is shutting down"))

    def _bound(self, row: _Row, b: int) -> list:
        return [dataclasses.replace(iv, rows=(b,)) for iv in row.request.interventions]

    def _forward(self, rows_ids, mask, positions, lengths, phase, interventions, sites, cache):
        acts = ActivationCache(attention_mask=mask)
        handles = []
        model = self.model
        ctx = ForwardContext(positions, lengths, phase)
        try:
            for site in sites:
                handles += model.attach_site(site, model.cache_hook(site, acts, None, None, None), CACHE, False)
            with model.attached(interventions), torch.no_grad():
                out = model.call_hf(ctx, input_ids=rows_ids, attention_mask=mask,
                                    position_ids=positions.clamp(min=0), past_key_values=cache,
                                    use_cache=True, logits_to_keep=1)
        finally:
            for h in handles:
                h.remove()
        return out, acts

    def _join(self, handle: Handle) -> None:
        if handle.cancelled.is_set():
            handle._events.put(Finished(list(handle.request.prompt), "cancelled", {}, torch.empty(0)))
            return
        req = handle.request
        ids = torch.tensor([req.prompt])
        batch = batch_from_ids(ids)
        gen = torch.Generator().manual_seed(req.seed)
        row = _Row(handle, list(req.prompt), len(req.prompt), gen, {s: [] for s in req.capture})
        try:
            out, acts = self._forward(ids, batch.attention_mask, batch.positions, batch.lengths,
                                      "prefill", self._bound(row, 0), req.capture, DynamicCache())
        except Exception as err:
            handle._events.put(err)
            return
        for site in req.capture:
            row.captured[site].append(acts[site][0].detach().cpu())
        kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._merge(kv, batch.attention_mask)
        self._rows.append(row)
        self._emit(row, out.logits[0, -1])

    def _merge(self, kv, mask) -> None:
        """Stack a new row's cache onto the batch's, left-padding the shorter of the two."""
        if self._kv is None:
            self._kv, self._mask = kv, mask
            return
        length = max(self._mask.shape[1], mask.shape[1])

        def pad(t, n):  # keys/values [b, kv, T, d] or mask [b, T]: zeros on the left
            if t.shape[-2 if t.dim() == 4 else -1] == n:
                return t
            extra = n - t.shape[-2 if t.dim() == 4 else -1]
            if t.dim() == 4:
                return torch.cat([t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3]), t], dim=2)
            return torch.cat([t.new_zeros(t.shape[0], extra), t], dim=1)

        self._kv = [(torch.cat([pad(k0, length), pad(k1, length)]), torch.cat([pad(v0, length), pad(v1, length)]))
                    for (k0, v0), (k1, v1) in zip(self._kv, kv)]
        self._mask = torch.cat([pad(self._mask, length), pad(mask, length)])

    def _decode(self) -> None:
        rows = self._rows
        last = torch.tensor([[r.ids[-1]] for r in rows])
        positions = torch.tensor([[len(r.ids) - 1] for r in rows])
        lengths = torch.tensor([r.prompt_len for r in rows])
        mask = torch.cat([self._mask, torch.ones(len(rows), 1, dtype=self._mask.dtype)], dim=1)
        cache = DynamicCache()
        for layer, (k, v) in enumerate(self._kv):
            cache.update(k, v, layer)
        interventions = [iv for b, r in enumerate(rows) for iv in self._bound(r, b)]
        sites = sorted({s for r in rows for s in r.request.capture})
        out, acts = self._forward(last, mask, positions, lengths, "decode", interventions, sites, cache)
        self._kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        self._mask = mask
        self.stats.steps += 1
        self.stats.batch_sizes.append(len(rows))
        for b, row in enumerate(rows):
            for site in row.request.capture:
                row.captured[site].append(acts[site][b].detach().cpu())
            self._emit(row, out.logits[b, -1])

    def _emit(self, row: _Row, logits: torch.Tensor) -> None:
        """Pick the row's next token with its own generator and tell its caller."""
        req = row.request
        logits = logits.float().cpu()
        if req.do_sample:
            scaled = logits / req.temperature
            if req.top_k:
                kth = scaled.topk(req.top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, float("-inf"))
            # seeded per step as runtime.generate does (seed + step), so a request sampled
            # here draws the same tokens as generate() run on it alone
            row.generator.manual_seed(req.seed + len(row.ids) - row.prompt_len)
            token = int(torch.multinomial(torch.softmax(scaled, -1)[None], 1, generator=row.generator))
        else:
            token = int(logits.argmax())
        logp = torch.log_softmax(logits, -1)
        top = []
        if req.top_logprobs:
            values, index = logp.topk(req.top_logprobs)
            top = list(zip(index.tolist(), values.tolist()))
        row.ids.append(token)
        if req.keep_logits:
            row.logits.append(logits)
        self.stats.tokens += 1
        row.handle._events.put(Step(token, float(logp[token]), top))

    def _done(self, row: _Row) -> str | None:
        if row.handle.cancelled.is_set():
            return "cancelled"
        new = len(row.ids) - row.prompt_len
        if new and row.ids[-1] in row.request.stop_ids:
            return "stop"
        return "length" if new >= row.request.max_new_tokens else None

    def _drop_finished(self) -> None:
        keep = []
        for b, row in enumerate(self._rows):
            reason = self._done(row)
            if reason is None:
                keep.append(b)
                continue
            acts = {s: torch.cat(parts) for s, parts in row.captured.items() if parts}
            logits = torch.stack(row.logits) if row.logits else torch.empty(0)
            row.handle._events.put(Finished(row.ids, reason, acts, logits))
            self.stats.latencies.append(time.perf_counter() - row.handle.submitted)
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[b] for b in keep]
        if not keep:
            self._kv, self._mask = None, None
            return
        index = torch.tensor(keep)
        mask = self._mask[index]
        first = int((mask.sum(0) > 0).nonzero()[0])  # columns padded in every remaining row go
        self._mask = mask[:, first:]
        self._kv = [(k[index][:, :, first:], v[index][:, :, first:]) for k, v in self._kv]
