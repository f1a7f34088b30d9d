"""Edge interventions: ablate an edge (sender -> one receiver's input) and nothing else.

Technique (Wang et al. 2022, "Interpretability in the Wild"; Conmy et al. 2023, "Towards
Automated Circuit Discovery for Mechanistic Interpretability"). The input a receiver reads is
the residual stream ``x_r = sum_s out_s (+ constant biases)``. Ablating the edges ``E_r`` into
``r`` gives that receiver alone the input

    x_r' = x_r - sum_{s in E_r} out_s + sum_{s in E_r} out_s^abl

while every other receiver reads its own input. ``out_s`` is the sender's output *in the same
forward* (so ablations upstream propagate, the convention of ACDC), ``out_s^abl`` its value
under the ablation: ``"corrupt"`` (the paired corrupt prompt's output -- ACDC's and EAP's
patching), ``"mean"`` (the mean over the corrupt prompts, per position) or ``"zero"``.

How it runs: one forward with hooks that record every sender's output as it is produced (a
head's ``z[h] @ W_O[h]``, an MLP's ``mlp_out``, the embedding as block 0's input) and, at each
receiver with an ablated edge, recompute the receiver from its substituted input (calling the modules' ``forward`` directly,
so no hook fires inside a hook) -- a head's
q / k / v projection of ``norm(x_r')`` at the ``attn.q/k/v`` site (under grouped-query
attention a k / v receiver is a KV head: its key / value, which every query head of its group
reads, is recomputed at ``attn.k/v[h<g>]``), ``mlp(norm(x_r'))`` at ``mlp_out``,
``final_norm(x_r')`` at ``ln_final``. Rows of a batch carry different edge sets
(``removed[row, edge]``), so a whole sweep is one forward. Rows with nothing ablated at a
receiver keep the model's own activation bit for bit. See ``graph.py`` for the families where
this is exact and why the others are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interplab.analyses.circuits.graph import CircuitGraph, Receiver
from interplab.analyses.metrics import answer_metric, check_metric
from interplab.core.errors import ConfigError, InputError, choices
from interplab.core.model import Model
from interplab.core.sites import Site, SiteKind

ABLATIONS = ("corrupt", "mean", "zero")


def check_ablation(name: str) -> None:
    if name not in ABLATIONS:
        raise ConfigError(f"Unknown edge ablation {name!r}. Valid: {choices(ABLATIONS)} "
                          "(resample ablation: pass a row-shuffled corrupt batch as 'corrupt').")


@dataclass(frozen=True, eq=False)
class CircuitTask:
    """Clean prompts, their corrupt counterparts and the answer tokens the metric reads."""

    clean: torch.Tensor  # [prompt, pos] token ids, unpadded
    answers: torch.Tensor  # [prompt]
    wrong: torch.Tensor | None = None  # [prompt]; needed by logit_diff
    corrupt: torch.Tensor | None = None  # [prompt, pos]; needed by the corrupt / mean ablations

    def __post_init__(self) -> None:
        clean = torch.as_tensor(self.clean).long()
        if clean.ndim != 2 or clean.numel() == 0:
            raise InputError(f"CircuitTask.clean must be [prompt, pos] token ids; got shape "
                             f"{tuple(clean.shape)}.")
        object.__setattr__(self, "clean", clean)
        object.__setattr__(self, "answers", torch.as_tensor(self.answers).long().flatten())
        if self.answers.shape[0] != clean.shape[0]:
            raise InputError(f"CircuitTask: {self.answers.shape[0]} answers for "
                             f"{clean.shape[0]} prompts; give one per prompt.")
        if self.wrong is not None:
            object.__setattr__(self, "wrong", torch.as_tensor(self.wrong).long().flatten())
        if self.corrupt is not None:
            corrupt = torch.as_tensor(self.corrupt).long()
            if corrupt.shape != clean.shape:
                raise InputError(f"CircuitTask: corrupt prompts {tuple(corrupt.shape)} must "
                                 f"pair one to one with the clean ones {tuple(clean.shape)} "
                                 "(same count, same length).")
            object.__setattr__(self, "corrupt", corrupt)

    @property
    def n_prompts(self) -> int:
        return self.clean.shape[0]


def check_task(model: Model, task: CircuitTask, metric: str, ablation: str) -> None:
    """Refuse, before any forward, a task this model, metric and ablation cannot run."""
    check_metric(metric)
    check_ablation(ablation)
    vocab = model.dims.d_vocab
    for name, ids in (("clean", task.clean), ("corrupt", task.corrupt), ("answers", task.answers),
                      ("wrong", task.wrong)):
        if ids is not None and ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < vocab):
            raise InputError(f"CircuitTask.{name} holds token ids outside 0..{vocab - 1} (the "
                             f"model's vocabulary): min {int(ids.min())}, max {int(ids.max())}.")
    if metric == "logit_diff" and task.wrong is None:
        raise ConfigError("The logit_diff metric needs CircuitTask.wrong (one token per prompt); "
                          "or use metric 'prob', 'loss' or 'kl'.")
    if ablation != "zero" and task.corrupt is None:
        raise ConfigError(f"The {ablation!r} edge ablation needs CircuitTask.corrupt prompts; or "
                          "use ablation='zero'.")


class Scorer:
    """Per-row metric from last-position logits; rows index prompts through ``prompts``."""

    def __init__(self, metric: str, task: CircuitTask, clean_last: torch.Tensor | None) -> None:
        check_metric(metric)
        if metric == "logit_diff" and task.wrong is None:
            raise ConfigError("The logit_diff metric needs CircuitTask.wrong (one token per "
                              "prompt); or use metric 'prob', 'loss' or 'kl'.")
        self.metric, self.task = metric, task
        self.clean_last = None if clean_last is None else clean_last.detach()
        wrong = task.wrong if task.wrong is not None else task.answers
        self.wrong = wrong

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger value means closer to the clean behaviour."""
        return self.metric in ("logit_diff", "prob")

    def __call__(self, last: torch.Tensor, prompts: torch.Tensor,
                 clean_last: torch.Tensor | None = None) -> torch.Tensor:
        clean = self.clean_last[prompts] if clean_last is None else clean_last
        return answer_metric(self.metric, last, self.task.answers[prompts], self.wrong[prompts],
                             clean)


def attn_norm(model: Model, layer: int):
    """The norm the attention of ``layer`` reads its input through."""
    block = model.adapter.blocks()[layer]
    for name in ("input_layernorm", "ln_1"):
        if hasattr(block, name):
            return getattr(block, name)
    raise ConfigError(f"No attention input norm found on block {layer} of the "
                      f"{model.adapter.name} family.")


def head_out_weights(model: Model) -> list[torch.Tensor]:
    """Per layer the [n_heads, d_head, d_model] map from a head's z to its residual term
    (the out projection without its bias, read off the module so Linear and Conv1D agree)."""
    d = model.dims
    n = d.n_heads * d.d_head
    out = []
    with torch.no_grad():
        for layer in range(d.n_layers):
            proj = model.adapter.out_proj(layer)
            p = next(proj.parameters())
            eye = torch.eye(n, dtype=p.dtype, device=p.device)
            w = proj(eye) - proj(torch.zeros(1, n, dtype=p.dtype, device=p.device))
            out.append(w.reshape(d.n_heads, d.d_head, -1))
    return out


class _Hook:
    """A bare interplab hook (``site`` + ``__call__(act, ctx)``) on the whole activation.

    Not ``interventions.Apply``: Apply hands its callable the selected entries flattened to
    [n_entries, *site], while a receiver must pair each row with the residual input recorded
    for that row, so the hooks see the whole [rows, pos, ...] tensor."""

    def __init__(self, site: Site, fn, writes: bool) -> None:
        self.site, self.fn, self.writes = site, fn, writes

    def __call__(self, act, ctx):
        return self.fn(act)


def sender_sites(graph: CircuitGraph) -> list[Site]:
    """Sites whose activations give every sender's output."""
    sites = [Site(0, SiteKind.RESID_PRE)]
    for layer in range(graph.n_layers):
        sites.append(Site(layer, SiteKind.Z))
        if graph.has_mlp:
            sites.append(Site(layer, SiteKind.MLP_OUT))
    return sites


def sender_outputs(acts, graph: CircuitGraph, w_o: list[torch.Tensor]) -> dict:
    """Sender outputs from activations at ``sender_sites``: embed [n, pos, d_model], heads per
    layer [n, pos, n_heads, d_model], mlp per layer [n, pos, d_model]."""
    out = {"embed": acts[Site(0, SiteKind.RESID_PRE)], "heads": [], "mlp": []}
    for layer in range(graph.n_layers):
        z = acts[Site(layer, SiteKind.Z)]
        out["heads"].append(torch.einsum("bphd,hdm->bphm", z, w_o[layer]))
        if graph.has_mlp:
            out["mlp"].append(acts[Site(layer, SiteKind.MLP_OUT)])
    return out


def reduce_ablation(out: dict, ablation: str) -> dict:
    """The corrupt outputs as the ablation uses them: as they are, or their mean per position."""
    if ablation != "mean":
        return out
    return {"embed": out["embed"].mean(0, keepdim=True),
            "heads": [h.mean(0, keepdim=True) for h in out["heads"]],
            "mlp": [m.mean(0, keepdim=True) for m in out["mlp"]]}


def stack_outputs(out: dict, graph: CircuitGraph) -> torch.Tensor:
    """Sender outputs stacked in ``graph.senders`` order: [n, pos, n_senders, d_model]."""
    parts = [out["embed"][:, :, None]]
    for layer in range(graph.n_layers):
        parts.append(out["heads"][layer])
        if graph.has_mlp:
            parts.append(out["mlp"][layer][:, :, None])
    return torch.cat(parts, dim=2)


class EdgePatcher:
    """Runs the model with any set of edges ablated per row; see the module doc."""

    def __init__(self, model, graph: CircuitGraph, task: CircuitTask, ablation: str = "corrupt"):
        check_task(model, task, "prob", ablation)
        self.model, self.graph, self.task, self.ablation = model, graph, task, ablation
        self.n_forward = 0
        self.w_o = head_out_weights(model)
        self.clean_logits = model.run(task.clean)
        self.n_forward += 1
        self.abl = self._ablated_outputs(task)

    def _ablated_outputs(self, task: CircuitTask) -> dict:
        if self.ablation == "zero":
            return {}
        _, cache = self.model.run_with_cache(task.corrupt, sender_sites(self.graph))
        self.n_forward += 1
        return reduce_ablation(sender_outputs(cache, self.graph, self.w_o), self.ablation)

    def _abl(self, key: str, layer: int | None, prompts: torch.Tensor, like: torch.Tensor):
        if self.ablation == "zero":
            return torch.zeros_like(like)
        value = self.abl[key] if layer is None else self.abl[key][layer]
        if self.ablation == "mean":
            return value.expand_as(like)
        return value[prompts]

    # -- the patched forward ----------------------------------------------------------------------
    def run(self, prompts: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        """Logits [rows, pos, d_vocab] of the clean prompts ``prompts[row]`` with the edges
        ``removed[row]`` (bool [rows, n_edges]) ablated."""
        prompts = torch.as_tensor(prompts).long()
        removed = torch.as_tensor(removed).bool()
        g = self.graph
        if removed.shape != (prompts.shape[0], g.n_edges):
            raise InputError(f"removed must be [rows, n_edges] = [{prompts.shape[0]}, "
                             f"{g.n_edges}]; got {tuple(removed.shape)}.")
        ids = self.task.clean[prompts]
        hooks = _Forward(self, prompts, removed).hooks()
        self.n_forward += 1
        return self.model.run(ids, hooks)


class _Forward:
    """State of one edge-patched forward: sender differences (abl - current) so far, inputs."""

    def __init__(self, patcher: EdgePatcher, prompts: torch.Tensor, removed: torch.Tensor):
        self.p, self.prompts = patcher, prompts
        self.removed = removed.to(torch.get_default_dtype())
        self.any = removed.any(0)
        self.g = patcher.graph
        self.diff: torch.Tensor | None = None  # [rows, pos, n_senders, d_model]
        self.x: dict = {}
        self.recv = {}
        for r in self.g.receivers:
            self.recv[(r.kind, r.layer, r.head, r.input)] = r

    def _active(self, r: Receiver) -> bool:
        return bool(self.any[r.start : r.start + r.n_senders].any())

    def _delta(self, r: Receiver, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.removed[:, r.start : r.start + r.n_senders].to(like.dtype)
        delta = torch.einsum("rs,rpsd->rpd", m, self.diff[:, :, : r.n_senders])
        return delta, m.any(1)

    def _head_receivers(self, layer: int, inp: str) -> list[Receiver]:
        """The receivers at the ``attn.<inp>`` site of ``layer``: one per query head for q, one
        per KV head for k / v (keyed by its group's first query head)."""
        step = 1 if inp == "q" else self.g.group
        return [self.recv[("head", layer, h, inp)] for h in range(0, self.g.n_heads, step)]

    def _sender_index(self, name: str) -> int:
        return next(i for i, s in enumerate(self.g.senders) if s.name == name)

    def hooks(self) -> list[_Hook]:
        g, d = self.g, self.p.model.dims
        hooks = [_Hook(Site(0, SiteKind.RESID_PRE), self._embed, False)]
        for layer in range(d.n_layers):
            if layer:
                hooks.append(_Hook(Site(layer, SiteKind.RESID_PRE), self._record(layer), False))
            for inp in "qkv":
                heads = [r for r in self._head_receivers(layer, inp) if self._active(r)]
                if heads:
                    site = Site(layer, SiteKind(f"attn.{inp}"))
                    hooks.append(_Hook(site, self._qkv(layer, inp, heads), True))
            hooks.append(_Hook(Site(layer, SiteKind.Z), self._z(layer), False))
            if g.has_mlp:
                if not g.parallel:
                    hooks.append(_Hook(Site(layer, SiteKind.RESID_MID), self._mid(layer), False))
                hooks.append(_Hook(Site(layer, SiteKind.MLP_OUT), self._mlp(layer), True))
        hooks.append(_Hook(Site(d.n_layers - 1, SiteKind.RESID_POST), self._final_in, False))
        if self._active(self.recv[("logits", None, None, None)]):
            hooks.append(_Hook(Site(None, SiteKind.LN_FINAL), self._logits, True))
        return hooks

    # -- recorders --------------------------------------------------------------------------------
    def _embed(self, act):
        self.x[("pre", 0)] = act
        n = len(self.g.senders)
        self.diff = act.new_zeros(*act.shape[:2], n, act.shape[-1])
        self.diff[:, :, 0] = self.p._abl("embed", None, self.prompts, act) - act

    def _record(self, layer):
        def fn(act):
            self.x[("pre", layer)] = act
        return fn

    def _mid(self, layer):
        def fn(act):
            self.x[("mid", layer)] = act
        return fn

    def _final_in(self, act):
        self.x["final"] = act

    def _z(self, layer):
        def fn(z):
            cur = torch.einsum("bphd,hdm->bphm", z, self.p.w_o[layer])
            abl = self.p._abl("heads", layer, self.prompts, cur)
            i = self._sender_index(f"L{layer}.h0")
            self.diff[:, :, i : i + cur.shape[2]] = abl - cur
        return fn

    # -- receivers --------------------------------------------------------------------------------
    def _qkv(self, layer, inp, heads):
        model = self.p.model
        point = model.adapter.qkv_point(layer, inp)
        norm = attn_norm(model, layer)

        def fn(act):  # act [rows, pos, n_heads (q) | n_kv_heads (k, v), d_head]
            new = act.clone()
            x = self.x[("pre", layer)]
            for r in heads:
                delta, rows = self._delta(r, x)
                if not bool(rows.any()):
                    continue
                full = point.get(point.module.forward(norm.forward(x[rows] + delta[rows])))
                h = r.site_head
                new[rows, :, h] = full.select(point.head_axis, h).to(act.dtype)
            return new
        return fn

    def _mlp(self, layer):
        model = self.p.model
        r = self.recv[("mlp", layer, None, None)]
        active = self._active(r)
        mlp, norm = model.adapter.mlp_branch(layer), model.adapter.mlp_norm(layer)
        i = self._sender_index(f"mlp{layer}")

        def fn(act):
            new = act
            if active:
                x = self.x[("pre" if self.g.parallel else "mid", layer)]
                delta, rows = self._delta(r, x)
                new = act.clone()
                new[rows] = mlp.forward(norm.forward(x[rows] + delta[rows])).to(act.dtype)
            self.diff[:, :, i] = self.p._abl("mlp", layer, self.prompts, new) - new
            return new if active else None
        return fn

    def _logits(self, act):
        r = self.recv[("logits", None, None, None)]
        x = self.x["final"]
        delta, rows = self._delta(r, x)
        new = act.clone()
        new[rows] = self.p.model.adapter.final_norm().forward(x[rows] + delta[rows]).to(act.dtype)
        return new


def receiver_input_site(graph: CircuitGraph, r: Receiver) -> Site:
    """The site whose activation is receiver ``r``'s residual input."""
    if r.kind == "head" or (r.kind == "mlp" and graph.parallel):
        return Site(r.layer, SiteKind.RESID_PRE)
    if r.kind == "mlp":
        return Site(r.layer, SiteKind.RESID_MID)
    return Site(graph.n_layers - 1, SiteKind.RESID_POST)


__all__ = ["ABLATIONS", "CircuitTask", "EdgePatcher", "Scorer", "attn_norm", "check_ablation",
           "check_task", "head_out_weights", "receiver_input_site", "reduce_ablation",
           "sender_outputs", "sender_sites", "stack_outputs"]
