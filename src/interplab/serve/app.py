"""The FastAPI app: OpenAI-compatible completions and chat, models, health, metrics and
analysis jobs, over one continuous-batching ``Engine``.

``create_app(model, engine, artifacts, settings)`` builds it from parts, so tests (and other
hosts) can serve any model and engine; ``serve.server`` loads the parts and runs it on uvicorn.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from interplab.serve import errors, generation
from interplab.serve.completions import Call, collect, stream
from interplab.serve.engine import Engine, QueueFull
from interplab.serve.errors import RequestError
from interplab.serve.jobs import Jobs
from interplab.serve.metrics import CountRequests, Metrics
from interplab.serve.schemas import AnalysisRequest, ChatRequest, CompletionRequest
from interplab.serve.security import BearerAuth, BodyLimit
from interplab.serve.settings import Settings


@dataclass
class Served:
    """What every handler shares."""

    model: object
    engine: Engine
    artifacts: object
    settings: Settings
    metrics: Metrics
    executor: ThreadPoolExecutor  # threads that wait on the engine's per-request queues
    jobs: Jobs


def create_app(model, engine: Engine, artifacts=None, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    served = Served(model, engine, artifacts, settings, Metrics(),
                    ThreadPoolExecutor(engine.max_batch + engine.max_queue + 4, "interplab-wait"),
                    Jobs(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        served.jobs.close()
        served.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="interplab serve", version="1", lifespan=lifespan,
                  description="OpenAI-compatible generation with per-request interventions and internals.")
    app.state.served = served
    errors.install(app)

    def submit(prepared: generation.Prepared):
        """The request's handle, and its unsteered twin's when the spec asks to compare."""
        handles = []
        try:
            for gen in (prepared.gen, generation.baseline(prepared)):
                if gen is not None:
                    handles.append(engine.submit(gen))
        except QueueFull as err:
            for handle in handles:
                handle.cancel()
            raise RequestError(f"The server is busy: {err} Retry after {settings.retry_after_s} s.", None, 429,
                               "rate_limit_error", {"Retry-After": str(settings.retry_after_s)}) from None
        return handles[0], (handles[1] if len(handles) > 1 else None)

    async def answer(request: Request, body, chat: bool):
        generation.refuse_unsupported(body)

        def prepare():
            tok = model.tokenizer
            if chat:
                ids = generation.chat_ids(body, tok, settings.model_name)
                logprobs = (body.top_logprobs or 0) if body.logprobs else None
                limit = body.max_completion_tokens or body.max_tokens
                return generation.prepare(body, ids, limit, logprobs, model, artifacts, settings, "messages")
            ids = generation.completion_ids(body, tok)
            return generation.prepare(body, ids, body.max_tokens, body.logprobs, model, artifacts, settings, "prompt")

        prepared = await run_in_threadpool(prepare)
        generation.check_model(body, settings)  # after the checks above, so fuzzing reaches them
        handle, twin = await run_in_threadpool(submit, prepared)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        call = Call(chat, prepared, handle, served, include_usage, baseline=twin)
        if body.stream:
            return StreamingResponse(stream(call), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await collect(call, request.is_disconnected)

    @app.post("/v1/completions", summary="Complete a prompt (OpenAI-compatible)")
    async def completions(request: Request, body: CompletionRequest):
        return await answer(request, body, chat=False)

    @app.post("/v1/chat/completions", summary="Answer a conversation (OpenAI-compatible)")
    async def chat_completions(request: Request, body: ChatRequest):
        return await answer(request, body, chat=True)

    @app.get("/v1/models", summary="The served model")
    async def models():
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model", "created": 0,
                                            "owned_by": "interplab"}]}

    @app.get("/health", summary="Liveness, the served model and the queue depth")
    async def health():
        names = artifacts.names() if artifacts is not None and hasattr(artifacts, "names") else {}
        return {"status": "ok", "model": settings.model_name, "queue_depth": engine.stats.queue_depth,
                "active": engine.stats.active, "artifacts": names}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics():
        return PlainTextResponse(served.metrics.render(engine), media_type="text/plain; version=0.0.4")

    @app.get("/v1/analyses", summary="Registered analyses and their config fields")
    async def analyses():
        return {"object": "list", "data": await run_in_threadpool(served.jobs.catalogue)}

    @app.post("/v1/analyses", summary="Run an analysis as a job", status_code=202)
    async def submit_analysis(body: AnalysisRequest):
        job = await run_in_threadpool(served.jobs.submit, body.analysis, body.config)
        return job.public()

    @app.get("/v1/analyses/{job_id}", summary="An analysis job's status")
    async def analysis_status(job_id: str):
        return served.jobs.get(job_id).public()

    @app.get("/v1/analyses/{job_id}/record", summary="A finished job's results.json and files")
    async def analysis_record(job_id: str):
        return await run_in_threadpool(served.jobs.record, job_id)

    # outermost first: count everything, then authenticate, then bound the body
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(BearerAuth, token=settings.token)
    app.add_middleware(CountRequests, metrics=served.metrics)
    return app
