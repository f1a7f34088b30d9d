"""A finished request's internals as JSON: activations, dictionary features, probe scores and
the logit lens, computed from the activations the engine recorded for that request alone.

Positions index the request's own sequence: the prompt, then the generated tokens. The engine
records activations for every token it ran a forward on, which is every token but the last
generated one (it is sampled, never fed back), so the recorded rows are ``tokens[:-1]``.
"""

from __future__ import annotations

import torch

from interplab.analyses.logit_lens import lens_logits
from interplab.serve.tensors import encode


def resolve(positions, prompt_len: int, n: int) -> list[int]:
    """Token positions (non-negative, in order) of ``n`` recorded tokens: a word
    (prompt / generated / all) or a list (negative counts from the prompt's end; positions
    not recorded are left out)."""
    if positions == "prompt":
        return list(range(min(prompt_len, n)))
    if positions == "generated":
        return list(range(prompt_len, n))
    if positions == "all":
        return list(range(n))
    out = [p + prompt_len if p < 0 else p for p in positions]
    return [p for p in out if 0 <= p < n]


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _activations(req, acts, prompt_len) -> dict:
    out = {}
    for site in req.sites:
        t = acts[site]
        pos = resolve(req.positions, prompt_len, t.shape[0])
        sel = t[pos]
        if pos and req.reduce == "mean":
            sel = sel.float().mean(0)
        elif pos and req.reduce == "last":
            sel = sel[-1]
        out[str(site)] = {**encode(sel, req.format), "positions": pos}
    return out


def _features(req, acts, artifacts, prompt_len) -> dict:
    d = artifacts.dictionaries[req.dictionary]
    t = acts[req.site]
    pos = resolve(req.positions, prompt_len, t.shape[0])
    with torch.no_grad():
        z = d.encode(_flat(t[pos]).to(dtype=d.W_enc.dtype, device=d.W_enc.device))
        top = z.topk(req.k, dim=-1)
    return {"site": str(req.site), "positions": pos, "indices": top.indices.tolist(),
            "values": top.values.float().tolist()}


def _probe(probe, acts, model, prompt_len) -> dict:
    site = model.site(probe.site)
    t = acts[site]
    pos = list(range(t.shape[0]))
    return {"site": str(site), "positions": pos, "scores": probe.score(_flat(t)).tolist()}


def _lens(req, acts, model, prompt_len) -> dict:
    out = {}
    tok = model.tokenizer
    for site in req.sites:
        t = acts[site]
        pos = resolve(req.positions, prompt_len, t.shape[0])
        param = next(model.hf.parameters())
        probs = lens_logits(model, t[pos].to(device=param.device, dtype=param.dtype)).softmax(-1).cpu()
        top = probs.topk(req.k, dim=-1)
        entry = {"positions": pos, "ids": top.indices.tolist(), "probs": top.values.tolist()}
        if tok is not None:
            entry["tokens"] = [[tok.decode([i]) for i in row] for row in entry["ids"]]
        out[str(site)] = entry
    return out


def internals(spec, finished, model, artifacts, prompt_len: int) -> dict:
    """The ``interplab`` object of a response (JSON-able); only the asked sections appear."""
    acts = finished.activations
    out: dict = {"tokens": list(finished.tokens), "prompt_tokens": prompt_len,
                 "recorded_tokens": next((int(t.shape[0]) for t in acts.values()), 0)}
    if not acts and spec.capture:  # cancelled before its first forward: nothing was recorded
        return out
    if spec.activations is not None:
        out["activations"] = _activations(spec.activations, acts, prompt_len)
    if spec.features:
        out["features"] = {f.dictionary: _features(f, acts, artifacts, prompt_len) for f in spec.features}
    if spec.probes:
        out["probes"] = {name: _probe(artifacts.probes[name], acts, model, prompt_len) for name in spec.probes}
    if spec.logit_lens is not None:
        out["logit_lens"] = _lens(spec.logit_lens, acts, model, prompt_len)
    return out
