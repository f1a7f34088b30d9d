"""The prompt explorer's computation: one prefill forward of the prompt on the engine, recording
every layer's ``resid_post``, one layer's attention pattern and each registered dictionary's
input site; from those, the next-token predictions, the logit-lens grid, the attention pattern
per head and the top dictionary latents per token.

The forward is the engine's prefill of a one-token generation (a batch of one: exactly a solo
run of the prompt); its last-position logits are the model's next-token distribution. The lens
reads each layer's residual through the final norm and unembedding (``lens_logits``), one layer
at a time so a large vocabulary never needs [layers, positions, vocab] at once.
"""

from __future__ import annotations

import torch

from interplab.analyses.logit_lens import lens_logits
from interplab.core.sites import Site, SiteKind
from interplab.serve.engine import GenRequest
from interplab.ui.live import Live, Loaded, bad, finite, prompt_ids, token_texts
from interplab.ui.settings import UiSettings


def pattern_problem(model) -> str | None:
    """Why attention patterns cannot be read from this model (None when they can)."""
    impl = getattr(model.hf.config, "_attn_implementation", None)
    if impl != "eager":
        return (f"attention patterns are not available: the model runs the {impl!r} attention kernel, which "
                "does not return attention probabilities (load it with attn_implementation='eager').")
    return None


def _lens(model, acts, sites, tok_texts) -> dict:
    param = next(model.hf.parameters())
    ids, probs = [], []
    for site in sites:
        resid = acts[site].to(device=param.device, dtype=param.dtype)
        p = lens_logits(model, resid).softmax(-1).cpu()
        top = p.max(-1)
        ids.append(top.indices.tolist())
        probs.append([finite(v) for v in top.values.tolist()])
    return {"site": "resid_post", "layers": [s.layer for s in sites], "ids": ids, "probs": probs,
            "tokens": [tok_texts(row) for row in ids]}


def _features(loaded: Loaded, acts, k: int) -> list[dict]:
    out = []
    for name, d in sorted(loaded.artifacts.dictionaries.items()):
        site = loaded.model.site(d.cfg.input_site)
        x = acts[site]
        x = x.reshape(x.shape[0], -1).to(dtype=d.W_enc.dtype, device=d.W_enc.device)
        with torch.no_grad():
            top = d.encode(x).topk(min(k, d.cfg.d_sae), dim=-1)
        out.append({"dictionary": name, "site": str(site), "d_sae": d.cfg.d_sae, "k": top.indices.shape[-1],
                    "indices": top.indices.tolist(),
                    "values": [[finite(v) for v in row] for row in top.values.float().tolist()]})
    return out


def explore(live: Live, prompt: str, top_k: int, layer: int, feature_k: int, settings: UiSettings) -> dict:
    """Everything the explorer page shows for one prompt (see the module docstring)."""
    loaded = live.require()
    model = loaded.model
    dims = model.dims
    if top_k > dims.d_vocab:
        raise bad(f"{top_k} is more than the vocabulary's {dims.d_vocab} tokens.", "top_k")
    if not 0 <= layer < dims.n_layers:
        raise bad(f"layer {layer} is out of range; this model has {dims.n_layers} layers "
                  f"(valid 0..{dims.n_layers - 1}).", "layer")
    ids = prompt_ids(live, loaded, prompt, settings)
    resid = [Site(n, SiteKind.RESID_POST) for n in range(dims.n_layers)]
    problem = pattern_problem(model)
    pattern = None if problem else Site(layer, SiteKind.PATTERN)
    dict_sites = [model.site(d.cfg.input_site) for d in loaded.artifacts.dictionaries.values()]
    capture = list(dict.fromkeys([*resid, *([pattern] if pattern else []), *dict_sites]))
    (finished,) = live.run([GenRequest(ids, 1, capture=capture, keep_logits=True)])
    acts = finished.activations
    tok = model.tokenizer

    def texts(row):
        return token_texts(live, tok, row)

    logits = finished.logits[0].float()
    probs = logits.softmax(-1)
    top = probs.topk(top_k)
    attention: dict = {"available": pattern is not None, "layer": layer, "n_layers": dims.n_layers,
                       "n_heads": dims.n_heads}
    if pattern is None:
        attention["reason"] = problem
    else:
        attention["patterns"] = acts[pattern].float().tolist()  # [head, query, key]
    return {
        "model": loaded.name,
        "ids": ids,
        "tokens": texts(ids),
        "predictions": {"ids": top.indices.tolist(), "tokens": texts(top.indices.tolist()),
                        "probs": [finite(v) for v in top.values.tolist()],
                        "logits": [finite(v) for v in logits[top.indices].tolist()]},
        "lens": _lens(model, acts, resid, texts),
        "attention": attention,
        "features": _features(loaded, acts, feature_k),
    }
