"""The feature dashboards' routes: the dictionaries, a page of latents (sorted, searched), one
latent's dashboard, and the Neuronpedia export of a dictionary."""

from __future__ import annotations

from fastapi import FastAPI, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from interplab.core.errors import InputError
from interplab.ui.features import SORTS, Features


def add_routes(app: FastAPI, features: Features) -> None:
    @app.get("/api/features", summary="Dictionaries with feature statistics")
    async def dictionaries():
        return {"dictionaries": features.listing()}

    @app.get("/api/latents", summary="A page of one dictionary's latents: sorted, searched")
    async def latents(d: str = Query(..., min_length=1, max_length=200), q: str = Query("", max_length=200),
                      sort: str = Query("density"), order: str = Query("desc"),
                      offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=500)):
        if sort not in SORTS:
            raise InputError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}.")
        if order not in ("asc", "desc"):
            raise InputError(f"order must be asc or desc, got {order!r}.")
        return await run_in_threadpool(features.page, d, q.strip(), sort, order == "desc", offset, limit)

    @app.get("/api/export", summary="A dictionary's dashboards as the batches Neuronpedia imports (a zip)")
    async def export(d: str = Query(..., min_length=1, max_length=200),
                     model_id: str = Query("", max_length=200), sae_id: str = Query("", max_length=200)):
        body, name = await run_in_threadpool(features.neuronpedia_zip, d, model_id, sae_id)
        return Response(body, media_type="application/zip",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    @app.get("/api/feature", summary="One latent's dashboard")
    async def feature(d: str = Query(..., min_length=1, max_length=200), i: int = Query(..., ge=0)):
        return await run_in_threadpool(features.latent, d, i)
