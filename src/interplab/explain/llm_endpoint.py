"""``EndpointLM``: any OpenAI-compatible server as the labelling language model, over the standard
library's ``urllib`` (the main install needs nothing new). Every failure (nothing listening, a
timeout, an HTTP error, an answer that is not JSON or lacks a field) is an ``EndpointError``
whose message starts with the URL it was asking."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from interplab.core.errors import InputError
from interplab.explain.llm_backends import EndpointError, Messages, as_messages, gather, render_plain

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class EndpointLM:
    """Any OpenAI-compatible server: ``/v1/chat/completions`` for generation; for log-probs
    ``/v1/chat/completions`` with ``logprobs``/``top_logprobs`` (``logprob_api="chat"``) or
    ``/v1/completions`` with ``logprobs`` on the plain-text prompt (``logprob_api="completions"``),
    one token (``max_tokens=1``), greedy. ``model=None`` takes the first of ``GET /v1/models``."""

    def __init__(self, url: str, api_key: str | None = None, model: str | None = None,
                 timeout: float = 60.0, top_logprobs: int = 20, logprob_api: str = "chat"):
        if logprob_api not in ("chat", "completions"):
            raise InputError(f"logprob_api must be 'chat' or 'completions', got {logprob_api!r}.")
        base = url.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        parsed = urllib.parse.urlparse(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"Endpoint URL {url!r} must be http(s)://host[:port][/v1].")
        self.url, self.api_key, self.timeout = base, api_key, float(timeout)
        self.top_logprobs, self.logprob_api = int(top_logprobs), logprob_api
        self._model = model
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def model(self) -> str:
        if self._model is None:
            data = self._call("GET", "/v1/models")
            self._model = str(self._field(data, "/v1/models", "data", 0, "id"))
        return self._model

    def identity(self) -> dict:
        return {"backend": "endpoint", "url": self.url, "model": self.model, "logprob_api": self.logprob_api,
                "top_logprobs": self.top_logprobs}

    def _call(self, method: str, path: str, body: dict | None = None):
        url = self.url + path
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise EndpointError(f"{url}: HTTP {err.code} {err.reason}: {_detail(err)}") from None
        except urllib.error.URLError as err:
            if isinstance(err.reason, TimeoutError):
                raise EndpointError(f"{url}: no answer within {self.timeout:g} s (timed out).") from None
            raise EndpointError(f"{url}: cannot reach the server ({err.reason}); is it running and is the "
                                "URL right?") from None
        except TimeoutError:
            raise EndpointError(f"{url}: no answer within {self.timeout:g} s (timed out).") from None
        except OSError as err:  # connection reset, a broken HTTP answer
            raise EndpointError(f"{url}: the connection failed ({type(err).__name__}: {err}).") from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise EndpointError(f"{url}: malformed answer, not JSON: {raw[:200]!r}") from None

    def _field(self, data, path: str, *keys):
        node = data
        for k in keys:
            try:
                node = node[k]
            except (KeyError, IndexError, TypeError):
                where = "".join(f"[{k!r}]" for k in keys)
                raise EndpointError(f"{self.url}{path}: malformed answer, no {where} in "
                                    f"{json.dumps(data)[:200]}") from None
        return node

    def complete(self, messages: Messages, max_tokens: int = 64) -> str:
        body = {"model": self.model, "messages": as_messages(messages), "max_tokens": int(max_tokens),
                "temperature": 0}
        data = self._call("POST", "/v1/chat/completions", body)
        text = self._field(data, "/v1/chat/completions", "choices", 0, "message", "content")
        if not isinstance(text, str):
            raise EndpointError(f"{self.url}/v1/chat/completions: malformed answer, the message content is "
                                f"{type(text).__name__}, not text.")
        return text

    def top(self, messages: Messages) -> list[tuple[str, float]]:
        """The endpoint's top-k (token text, log-prob) alternatives for the next token."""
        if self.logprob_api == "chat":
            path = "/v1/chat/completions"
            body = {"model": self.model, "messages": as_messages(messages), "max_tokens": 1, "temperature": 0,
                    "logprobs": True, "top_logprobs": self.top_logprobs}
            data = self._call("POST", path, body)
            entries = self._field(data, path, "choices", 0, "logprobs", "content", 0, "top_logprobs")
            pairs = [(self._field(e, path, "token"), self._field(e, path, "logprob")) for e in entries]
        else:
            path = "/v1/completions"
            body = {"model": self.model, "prompt": render_plain(messages), "max_tokens": 1, "temperature": 0,
                    "logprobs": self.top_logprobs, "echo": False}
            data = self._call("POST", path, body)
            entries = self._field(data, path, "choices", 0, "logprobs", "top_logprobs", 0)
            if not isinstance(entries, dict):
                raise EndpointError(f"{self.url}{path}: malformed answer, top_logprobs[0] is not an object.")
            pairs = list(entries.items())
        try:
            return [(str(t), float(lp)) for t, lp in pairs]
        except (TypeError, ValueError):
            raise EndpointError(f"{self.url}{path}: malformed answer, a log-prob is not a number.") from None

    def logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str]) -> list[dict[str, float]]:
        return [gather(self.top(p), candidates) for p in prompts]


def _detail(err: urllib.error.HTTPError) -> str:
    try:
        raw = err.read()
    except OSError:
        return "(no body)"
    try:
        message = json.loads(raw)["error"]["message"]
        return str(message)[:300]
    except (ValueError, KeyError, TypeError):
        return raw[:300].decode("utf-8", "replace") or "(no body)"
