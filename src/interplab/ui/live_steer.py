"""The steering playground's computation, through the same path ``interplab serve`` takes for a
steered completion: the request becomes an ``interplab`` spec (a registered vector by
``vector_name``, or a dictionary latent's decoder row as a ``steer`` vector), is checked and
prepared by ``serve.generation.prepare`` with ``compare_unsteered``, and the steered request and
its unsteered twin run together on the engine (greedy, stopping at end-of-text).

Then, on the engine again: the unsteered model reads the steered text (prompt + steered tokens)
to give, at every generated step, the unsteered next-token distribution for the same prefix;
``KL(steered || unsteered)`` per step is taken against the distribution the steered token was
picked from. Each registered probe scores both texts (prompt + generated) read by the unsteered
model, with the probe's own reduction (``last`` token or ``mean``, as ``Probe.__call__`` does).
"""

from __future__ import annotations

import dataclasses
import re

import torch

from interplab.analyses.collect import position_weights
from interplab.analyses.logit_lens import lens_logits
from interplab.analyses.steering import from_dictionary
from interplab.core.errors import InterplabError
from interplab.core.sites import Site, SiteKind
from interplab.serve import generation
from interplab.serve.engine import GenRequest
from interplab.serve.errors import RequestError
from interplab.serve.schemas import CompletionRequest
from interplab.serve.settings import Settings
from interplab.ui.live import Live, Loaded, bad, decode, finite, prompt_ids, token_texts
from interplab.ui.settings import UiSettings

_SPEC_FIELD = re.compile(r"^interplab\.interventions\[0\](?:\.(\w+))?:?\s*")


def _intervention(loaded: Loaded, vector, dictionary, latent, scale, site) -> tuple[dict, dict]:
    """(the ``interplab.interventions`` item, what the response says was steered)."""
    arts = loaded.artifacts
    if (vector is None) == (dictionary is None):
        raise bad("give either a registered vector's name, or a dictionary and a latent "
                  f"(vectors: {', '.join(sorted(arts.vectors)) or 'none'}; dictionaries: "
                  f"{', '.join(sorted(arts.dictionaries)) or 'none'}).", "vector")
    if vector is not None:
        if vector not in arts.vectors:
            known = ", ".join(sorted(arts.vectors)) or "none (start `interplab ui` with --vectors DIR)"
            raise bad(f"unknown vector {vector!r}; registered: {known}.", "vector")
        item = {"op": "steer", "vector_name": vector, "scale": scale}
        sites = [str(s) for s in arts.vectors[vector].sites]
        what = {"kind": "vector", "vector": vector}
    else:
        if dictionary not in arts.dictionaries:
            known = ", ".join(sorted(arts.dictionaries)) or "none (start `interplab ui` with --dictionaries DIR)"
            raise bad(f"unknown dictionary {dictionary!r}; registered: {known}.", "dictionary")
        d = arts.dictionaries[dictionary]
        if latent is None:
            raise bad(f"steering with dictionary {dictionary!r} needs a latent index (0..{d.cfg.d_sae - 1}).",
                      "latent")
        if not 0 <= latent < d.cfg.d_sae:
            raise bad(f"latent {latent} is out of range; dictionary {dictionary!r} has d_sae={d.cfg.d_sae} "
                      f"(valid 0..{d.cfg.d_sae - 1}).", "latent")
        direction = from_dictionary(d, latent)
        item = {"op": "steer", "site": str(direction.site), "vector": direction.vector.tolist(), "scale": scale}
        sites = [str(direction.site)]
        what = {"kind": "feature", "dictionary": dictionary, "latent": latent}
    if site is not None:
        item["site"] = site
        sites = [site]
    return item, {**what, "scale": scale, "sites": sites}


def _spec_error(err: InterplabError, feature: bool):
    """A spec error (``interplab.interventions[0].FIELD: ...``) as the playground's own field."""
    message = str(err)
    m = _SPEC_FIELD.match(message)
    field = m.group(1) if m else None
    param = {"vector_name": "vector", "scale": "scale", "site": "site"}.get(field, "site" if feature else "vector")
    if field == "vector_name" and "has" in message and "the site" in message:
        param = "site"  # the vector does not fit the chosen site
    return bad(message[m.end():] if m else message, param)


def _prepare(loaded: Loaded, ids, item, max_tokens: int, settings: UiSettings, feature: bool):
    body = CompletionRequest(model=loaded.name, prompt=ids, max_tokens=max_tokens, temperature=0,
                             interplab={"interventions": [item], "compare_unsteered": True})
    serve_settings = Settings(model_name=loaded.name, max_new_tokens=settings.max_new_tokens,
                              max_prompt_tokens=settings.max_prompt_tokens, max_interventions=1)
    try:
        return generation.prepare(body, ids, max_tokens, None, loaded.model, loaded.artifacts, serve_settings,
                                  "prompt")
    except RequestError as err:
        raise bad(err.message, err.param) from None
    except InterplabError as err:
        raise _spec_error(err, feature) from None


def _texts(live: Live, loaded: Loaded, finished, prompt_len: int) -> dict:
    tok = loaded.model.tokenizer
    new = finished.tokens[prompt_len:]
    return {"text": decode(live, tok, new), "ids": new, "tokens": token_texts(live, tok, new),
            "finish_reason": "stop" if finished.reason == "stop" else "length"}


def _probe_score(probe, acts, model, ids) -> float:
    site = model.site(probe.site)
    x = acts[site].float()
    x = x.reshape(x.shape[0], -1)
    bos = getattr(model.tokenizer, "bos_token_id", None)
    w = position_weights(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), probe.reduction, bos)
    return float(probe.score(w @ x)[0])


def steer(live: Live, prompt: str, vector, dictionary, latent, scale: float, site, max_tokens,
          settings: UiSettings) -> dict:
    """Steered and unsteered greedy generations, the KL per step and the probe scores."""
    loaded = live.require()
    model = loaded.model
    ids = prompt_ids(live, loaded, prompt, settings, room=2)
    context = model.max_positions or (len(ids) + settings.max_new_tokens + 1)
    room = context - len(ids) - 1  # the texts are read once more, with one new token after them
    if max_tokens is None:
        max_tokens = min(settings.max_new_tokens, room)
    elif max_tokens > settings.max_new_tokens:
        raise bad(f"{max_tokens} is over the limit of {settings.max_new_tokens} (the UI's max_new_tokens).",
                  "max_tokens")
    elif max_tokens > room:
        raise bad(f"the prompt's {len(ids)} tokens leave room for at most {room} new ones in the model's "
                  f"context of {context}.", "max_tokens")
    item, what = _intervention(loaded, vector, dictionary, latent, scale, site)
    prepared = _prepare(loaded, ids, item, max_tokens, settings, what["kind"] == "feature")
    steered_req = dataclasses.replace(prepared.gen, keep_logits=True)
    steered, unsteered = live.run([steered_req, generation.baseline(prepared)])
    p = len(ids)
    s_new, u_new = steered.tokens[p:], unsteered.tokens[p:]
    probes = loaded.artifacts.probes
    probe_sites = [model.site(pr.site) for pr in probes.values()]
    last = Site(model.dims.n_layers - 1, SiteKind.RESID_POST)
    reads = [GenRequest(ids + s_new, 1, capture=list(dict.fromkeys([last, *probe_sites])))]
    if probes:
        reads.append(GenRequest(ids + u_new, 1, capture=list(dict.fromkeys(probe_sites))))
    read = live.run(reads)
    # the unsteered model's distributions along the steered text: positions p-1 .. p+n-2
    param = next(model.hf.parameters())
    resid = read[0].activations[last][p - 1: p - 1 + len(s_new)].to(device=param.device, dtype=param.dtype)
    log_q = torch.log_softmax(lens_logits(model, resid).cpu(), -1)
    log_p = torch.log_softmax(steered.logits.float(), -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0)
    scores = {}
    for name, probe in sorted(probes.items()):
        scores[name] = {"site": str(model.site(probe.site)), "reduction": probe.reduction,
                        "labels": list(probe.label_names),
                        "steered": finite(_probe_score(probe, read[0].activations, model, ids + s_new)),
                        "unsteered": finite(_probe_score(probe, read[1].activations, model, ids + u_new))}
    return {
        "model": loaded.name,
        "prompt_tokens": p,
        "max_tokens": max_tokens,
        "intervention": what,
        "steered": _texts(live, loaded, steered, p),
        "unsteered": _texts(live, loaded, unsteered, p),
        "kl": {"per_step": [finite(v) for v in kl.tolist()],
               "mean": finite(kl.mean()) if len(kl) else None,
               "what": "KL(steered || unsteered) in nats between the next-token distributions at each "
                       "generated step, both for the same prefix (the prompt and the steered tokens so far)"},
        "probes": scores,
    }
