"""The UI's access token, for a browser: when a token is set, a request is let in with
``Authorization: Bearer TOKEN``, the ``interplab_ui_token`` cookie, or once with ``?token=TOKEN``
in the URL (the printed URL carries it, as Jupyter's does), which sets the cookie (HttpOnly,
SameSite=Strict) and redirects to the same URL without the token. Anything else is a 401 page.
Loopback without a token needs none; off loopback ``interplab ui`` refuses to start without one
(``serve.security.check_bind``)."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qsl, urlencode

COOKIE = "interplab_ui_token"


def _cookie(headers: dict) -> bytes:
    for part in headers.get(b"cookie", b"").split(b";"):
        name, _, value = part.strip().partition(b"=")
        if name == COOKIE.encode():
            return value
    return b""


class TokenGate:
    def __init__(self, app, token: str | None):
        self.app, self.token = app, (token or "").encode()

    def _ok(self, given: bytes) -> bool:
        return bool(given) and hmac.compare_digest(given, self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.token:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        scheme, _, bearer = headers.get(b"authorization", b"").partition(b" ")
        if (scheme.lower() == b"bearer" and self._ok(bearer.strip())) or self._ok(_cookie(headers)):
            return await self.app(scope, receive, send)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and self._ok(given[-1].encode()):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            location = scope["path"] + (f"?{rest}" if rest else "")
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", location.encode()), (b"content-length", b"0"),
                                    (b"set-cookie", f"{COOKIE}={given[-1]}; HttpOnly; SameSite=Strict; Path=/".encode())]})
            await send({"type": "http.response.body", "body": b""})
            return
        body = (b"<!doctype html><title>interplab ui: token needed</title><p>This interplab ui needs its access "
                b"token: open the URL it printed (with <code>?token=...</code>).</p>")
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
