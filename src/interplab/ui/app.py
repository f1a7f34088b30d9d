"""The UI's FastAPI app: HTML pages (static shells from ``ui/static`` whose scripts call the JSON
API), the runs API, and — when given — feature dashboards and the live model's explorer and
steering playground.

``create_ui_app(runs_dir, settings, features=..., live=...)`` builds it from parts so tests can
serve any runs directory and model; ``ui.server`` loads the parts and runs it on uvicorn."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware

from interplab.core.errors import InputError, InterplabError
from interplab.serve.security import BodyLimit
from interplab.ui.assets import assets
from interplab.ui.auth import TokenGate
from interplab.ui.paths import NotFound
from interplab.ui.run_view import RunViews, compare
from interplab.ui.runs_index import SORTS, RunIndex
from interplab.ui.settings import UiSettings

PAGES = ("index", "run", "compare", "features", "feature", "explore", "steer")
SECURITY_HEADERS = {
    # everything the pages load comes from this server; no inline scripts, no frames
    "content-security-policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' "
                               "'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "param": param}}, status_code=status)


def install_errors(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(request: Request, err: NotFound):
        return error(404, str(err))

    @app.exception_handler(InterplabError)
    async def bad_input(request: Request, err: InterplabError):
        return error(400, str(err), getattr(err, "param", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query")]
        field = ".".join(loc) or None
        return error(422, f"{field or 'request'}: {first.get('msg', 'invalid')}", field)


def create_ui_app(runs_dir: str | Path, settings: UiSettings | None = None, features=None, live=None) -> FastAPI:
    settings = settings or UiSettings()
    root = Path(runs_dir)
    index, views = RunIndex(root), RunViews(root)
    app = FastAPI(title="interplab ui", version="1", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.index, app.state.views, app.state.features, app.state.live = index, views, features, live
    install_errors(app)
    assets()  # read (and clean) the static files once, at start

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def html(name: str) -> Response:
        asset = assets().get(f"{name}.html")
        if asset is None:
            raise NotFound(f"No page {name!r}.")
        return Response(asset.body, media_type=asset.media_type, headers={"cache-control": "no-cache"})

    for name in PAGES:
        route = "/" if name == "index" else f"/{name}"
        app.add_api_route(route, (lambda n: lambda: html(n))(name), methods=["GET"],
                          include_in_schema=False)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon():  # browsers ask for it whatever the page says; a 404 would be a console error
        asset = assets()["favicon.svg"]
        return Response(asset.body, media_type=asset.media_type, headers={"cache-control": "public, max-age=86400"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str, request: Request):
        asset = assets().get(name)
        if asset is None:
            raise NotFound(f"No static file {name!r}.")
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers={"etag": asset.etag})
        return Response(asset.body, media_type=asset.media_type,
                        headers={"etag": asset.etag, "cache-control": "public, max-age=86400"})

    @app.get("/api/runs", summary="Run records under the runs directory: filter, sort, page")
    async def runs(q: str = Query("", max_length=200), analysis: str = Query("", max_length=100),
                   sort: str = Query("started"), order: str = Query("desc"),
                   offset: int = Query(0, ge=0), limit: int | None = Query(None, ge=1)):
        if sort not in SORTS:
            raise InputError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}.")
        if order not in ("asc", "desc"):
            raise InputError(f"order must be asc or desc, got {order!r}.")
        limit = min(limit or settings.page_size, settings.max_page_size)
        out = await run_in_threadpool(index.query, q, analysis, sort, order == "desc", offset, limit)
        return {**out, "root": str(root), "live": live is not None,
                "features": [] if features is None else features.listing()}

    @app.get("/api/run", summary="One run record: config, provenance, headline and report blocks")
    async def run(id: str = Query(..., min_length=1, max_length=1000)):
        return await run_in_threadpool(views.get, id)

    @app.get("/api/compare", summary="Two runs' configs and headline numbers side by side")
    async def compare_runs(a: str = Query(..., min_length=1, max_length=1000),
                           b: str = Query(..., min_length=1, max_length=1000)):
        va, vb = await run_in_threadpool(views.get, a), await run_in_threadpool(views.get, b)
        return compare(va, vb)

    @app.get("/api/health", include_in_schema=False)
    async def health():
        return {"status": "ok", "runs_dir": str(root), "live": None if live is None else live.status()}

    if features is not None:
        from interplab.ui.features_api import add_routes as add_feature_routes

        add_feature_routes(app, features)
    if live is not None:
        from interplab.ui.live_api import add_routes as add_live_routes

        add_live_routes(app, live, settings)

    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(TokenGate, token=settings.token)
    return app
