"""Every refusal as an OpenAI-style error body, ``{"error": {"message", "type", "param"}}``,
with the field named in ``param`` and at the start of the message.

Bad input is always a 4xx: pydantic's validation errors, interplab's own errors (InputError,
ConfigError, SiteError, InterventionError, ...) and the handlers' ``RequestError``.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from interplab.core.errors import InterplabError

_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class RequestError(Exception):
    """A request the server refuses: its status, the message and the field it is about."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind
        self.headers = headers or {}


def error_response(status: int, message: str, param: str | None = None,
                   kind: str = "invalid_request_error", headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}},
                        status_code=status, headers=headers)


def field_path(loc) -> str:
    """pydantic's ``("body", "messages", 0, "content")`` as ``messages[0].content``."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith(("function-", "constrained-")) and part not in ("str", "int", "list[int]"):
            path += f".{part}" if path else part
    return path or "body"


def _describe(err: dict) -> str:
    kind, path = err.get("type", ""), field_path(err.get("loc", ()))
    if kind == "extra_forbidden":
        return f"{path}: unknown field (see the API schema at /docs for the valid ones)"
    if kind == "json_invalid":
        return f"body: not valid JSON ({err.get('ctx', {}).get('error', err.get('msg'))})"
    if kind == "missing":
        return f"{path}: required"
    return f"{path}: {err.get('msg', 'invalid')}"


def install(app: FastAPI) -> None:
    """Register the handlers that turn every refusal into an OpenAI-style 4xx."""

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        # a union (str | list[int]) reports one error per branch; the first names the field
        message = "; ".join(dict.fromkeys(_describe(e) for e in errors[:3]))
        return error_response(400, message, field_path(errors[0].get("loc", ())) if errors else None)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError):
        return error_response(exc.status, exc.message, exc.param, exc.kind, exc.headers)

    @app.exception_handler(InterplabError)
    async def _interplab(request: Request, exc: InterplabError):
        message = str(exc)
        match = _FIELD.match(message)
        return error_response(400, message, match.group(1) if match else None)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail), None,
                              "not_found_error" if exc.status_code == 404 else "invalid_request_error",
                              getattr(exc, "headers", None))
