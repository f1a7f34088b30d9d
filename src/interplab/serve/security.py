"""Safety checks around the app: refuse to bind off loopback without a token, require the bearer
token when one is set (constant-time compare), and bound every request body.

Both checks are plain ASGI middleware so they run before FastAPI parses anything, and a refusal
is an OpenAI-style error body.
"""

from __future__ import annotations

import hmac
import ipaddress
import json

from interplab.core.errors import ConfigError

OPEN_PATHS = ("/health",)  # answered without the token (load balancers' probes)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without an access token."""
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"Refusing to serve on {host!r} without an access token: anyone who can reach that "
            "address could use the model and run jobs. Pass --token TOKEN (or set INTERPLAB_TOKEN), "
            "or bind a loopback address (--host 127.0.0.1).")


async def send_error(send, status: int, message: str, kind: str, param: str | None = None,
                     headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"error": {"message": message, "type": kind, "param": param, "code": None}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """401 unless ``Authorization: Bearer <token>`` matches (when a token is configured)."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, (token or "").encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token):
            return await self.app(scope, receive, send)
        await send_error(send, 401, "A valid access token is needed: send 'Authorization: Bearer TOKEN' "
                         "(the openai client's api_key).", "authentication_error",
                         headers=((b"www-authenticate", b"Bearer"),))


class BodyLimit:
    """413 for a body over ``limit`` bytes, by Content-Length or by counting a chunked body; the
    body (at most ``limit`` bytes) is read here and replayed to the app."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def _refuse(self, send):
        return send_error(send, 413, f"The request body is over the limit of {self.limit} bytes "
                          "(the server's --max-body-bytes).", "invalid_request_error", "body")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the app expects

        await self.app(scope, replay, send)
