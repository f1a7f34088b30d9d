"""The live model's JSON API (``add_routes(app, live, settings)``), behind the explorer and
steering pages:

* ``GET /api/live``: the model, its state and dimensions, and what is registered — vectors
  (name, sites, norms), probes (name, site, reduction, labels), dictionaries (name, site,
  d_sae) — plus the sites a vector or feature may be moved to and the UI's limits.
* ``POST /api/explore {prompt, top_k=10, layer=0, feature_k=5}``: the prompt's tokens, the
  top-k next tokens with probabilities, the logit-lens grid (layers x positions: top token and
  its probability), the attention patterns of ``layer`` ([head][query][key]; or why they are
  not available) and the top ``feature_k`` latents per token of every registered dictionary
  (with its ``feature_id`` on the feature dashboards, None when it has no statistics there).
* ``POST /api/steer {prompt, vector | (dictionary, latent), scale, site?, max_tokens?}``: the
  steered and unsteered greedy generations, the KL per step and mean, the probe scores.

While the model loads every route answers 503 (with Retry-After); after a failed load, 500 with
the loader's message; bad input is a 4xx ``{"error": {"message", "param"}}`` naming the field.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from interplab.core.sites import Site, SiteKind
from interplab.ui.live import Live, LiveUnavailable
from interplab.ui.live_explore import explore, pattern_problem
from interplab.ui.live_steer import steer
from interplab.ui.settings import UiSettings

MAX_SCALE = 1e6


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExploreBody(_Body):
    prompt: str = Field(min_length=1, max_length=200_000, description="The text to read.")
    top_k: int = Field(10, ge=1, le=100, description="How many next-token predictions to return.")
    layer: int = Field(0, ge=0, description="The layer whose attention patterns to return.")
    feature_k: int = Field(5, ge=1, le=50, description="Top latents per token of each dictionary.")


class SteerBody(_Body):
    prompt: str = Field(min_length=1, max_length=200_000)
    vector: str | None = Field(None, min_length=1, max_length=500, description="A registered vector's name.")
    dictionary: str | None = Field(None, min_length=1, max_length=500,
                                   description="A registered dictionary: steer along one latent's decoder row.")
    latent: int | None = Field(None, description="The dictionary latent (0..d_sae-1).")
    scale: float = Field(allow_inf_nan=False, ge=-MAX_SCALE, le=MAX_SCALE,
                         description="The multiple of the direction added (0: unsteered).")
    site: str | None = Field(None, min_length=1, max_length=100,
                             description="Where to add it, when not at the vector's own site(s).")
    max_tokens: int | None = Field(None, ge=1, description="New tokens (at most the UI's max_new_tokens).")


def feature_ids(features, loaded) -> dict[str, str | None]:
    """Each registered dictionary's id on the feature dashboards (``/feature?d=ID&i=LATENT``):
    the dashboard source read from its directory (or its ``features/``); None where it has none."""
    sources = getattr(features, "sources", None) or {}
    out = {}
    for name, path in loaded.artifacts.paths.get("dictionaries", {}).items():
        wanted = {Path(path).resolve(), (Path(path) / "features").resolve()}
        out[name] = next((sid for sid, src in sources.items() if Path(src.path).resolve() in wanted), None)
    return out


def listing(live: Live, settings: UiSettings, features=None) -> dict:
    loaded = live.require()
    ids = feature_ids(features, loaded)
    model, arts = loaded.model, loaded.artifacts
    d = model.dims
    sites = [str(Site(n, kind)) for n in range(d.n_layers) for kind in (SiteKind.RESID_PRE, SiteKind.RESID_POST)]
    return {
        **live.status(),
        "dims": {"n_layers": d.n_layers, "n_heads": d.n_heads, "d_model": d.d_model, "d_vocab": d.d_vocab},
        "attention": pattern_problem(model) or "available",
        "vectors": [{"name": n, "sites": [str(s) for s in v.sites], "norms": v.norm(), "method": v.method}
                    for n, v in sorted(arts.vectors.items())],
        "probes": [{"name": n, "site": str(p.site), "reduction": p.reduction, "labels": list(p.label_names)}
                   for n, p in sorted(arts.probes.items())],
        "dictionaries": [{"name": n, "site": x.cfg.input_site, "target_site": x.cfg.target_site,
                          "d_sae": x.cfg.d_sae, "arch": getattr(x, "arch", None), "feature_id": ids.get(n)}
                         for n, x in sorted(arts.dictionaries.items())],
        "sites": sites,
        "limits": {"max_new_tokens": settings.max_new_tokens, "max_prompt_tokens": settings.max_prompt_tokens},
    }


def add_routes(app: FastAPI, live: Live, settings: UiSettings) -> None:
    @app.exception_handler(LiveUnavailable)
    async def unavailable(request: Request, err: LiveUnavailable):
        headers = {} if err.retry_after is None else {"retry-after": str(err.retry_after)}
        return JSONResponse({"error": {"message": err.message, "param": None}}, status_code=err.status,
                            headers=headers)

    @app.get("/api/live", summary="The live model, its state and the registered vectors, probes, dictionaries")
    async def live_listing():
        return await run_in_threadpool(listing, live, settings, app.state.features)

    @app.post("/api/explore", summary="A prompt's tokens, predictions, logit lens, attention and features")
    async def explore_prompt(body: ExploreBody):
        out = await run_in_threadpool(explore, live, body.prompt, body.top_k, body.layer, body.feature_k, settings)
        ids = feature_ids(app.state.features, live.require())
        for f in out["features"]:
            f["feature_id"] = ids.get(f["dictionary"])
        return out

    @app.post("/api/steer", summary="Steered and unsteered generations side by side")
    async def steer_prompt(body: SteerBody):
        return await run_in_threadpool(steer, live, body.prompt, body.vector, body.dictionary, body.latent,
                                       body.scale, body.site, body.max_tokens, settings)
