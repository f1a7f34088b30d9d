"""The language models that write and judge explanations: a local ``HookedModel`` or any
OpenAI-compatible server, behind one small interface.

Every backend does two things with a chat prompt (a string, or OpenAI-style messages):

* ``complete(messages, max_tokens)``: a greedy completion, cut at the end-of-text token.
* ``logprobs(prompts, candidates)``: for each prompt, the log-probability that the next token
  begins each candidate answer (``"Yes"``/``"No"``, the digits ``"0"``..``"9"``).

Answer tokens. A token answers candidate ``c`` when its text, stripped of whitespace and
lower-cased, is non-empty and a prefix of ``c`` lower-cased (``" Yes"``, ``"Yes"``, ``"yes"``
and ``"Y"`` all answer ``"Yes"``); a token that would answer two candidates counts for neither.
A candidate's log-probability is the log-sum-exp over its tokens, ``-inf`` when it has none.
Locally the rule runs over the whole vocabulary; an endpoint only returns its top-k
alternatives, so a candidate outside them is ``-inf`` there (as in delphi).

Prompts. With a chat template (``tokenizer.chat_template``) a prompt is rendered by it with the
generation prompt and tokenized without added special tokens, as ``interplab serve`` does for
``/v1/chat/completions``; without one, as plain text (``render_plain``: "User: ...
Assistant:") tokenized with the tokenizer's defaults, as ``/v1/completions`` does.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Protocol

import torch

from interplab.core.errors import InputError, InterplabError

Messages = str | list[dict]


class EndpointError(InterplabError):
    """An OpenAI-compatible endpoint that could not be reached or gave an unusable answer."""


class LM(Protocol):
    def identity(self) -> dict:
        """What identifies this backend's answers (for the cache): model and weights, or URL."""

    def complete(self, messages: Messages, max_tokens: int = 64) -> str:
        """A greedy completion of the chat prompt."""

    def logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Per prompt, each candidate answer's next-token log-probability."""


def as_messages(messages: Messages) -> list[dict]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def render_plain(messages: Messages) -> str:
    """A prompt for models without a chat template: ``Role: content`` blocks, then ``Assistant:``."""
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in as_messages(messages)]
    return "\n\n".join([*parts, "Assistant:"])


def answers(text: str, candidates: Sequence[str]) -> list[int]:
    """Indices of the candidates a token with this text answers (see the module docstring)."""
    t = text.strip().lower()
    if not t:
        return []
    return [i for i, c in enumerate(candidates) if c.lower().startswith(t)]


def gather(token_logprobs: Sequence[tuple[str, float]], candidates: Sequence[str]) -> dict[str, float]:
    """Candidate log-probabilities from (token text, log-prob) pairs."""
    found: list[list[float]] = [[] for _ in candidates]
    for text, lp in token_logprobs:
        hit = answers(text, candidates)
        if len(hit) == 1:
            found[hit[0]].append(float(lp))
    return {c: (float(torch.logsumexp(torch.tensor(v, dtype=torch.float64), 0)) if v else -math.inf)
            for c, v in zip(candidates, found, strict=True)}


def choice_probs(logprobs: dict[str, float], candidates: Sequence[str]) -> list[float]:
    """The candidates' probabilities renormalised among themselves (uniform when all are -inf)."""
    lp = torch.tensor([logprobs[c] for c in candidates], dtype=torch.float64)
    if torch.isinf(lp).all():
        return [1.0 / len(candidates)] * len(candidates)
    return torch.softmax(lp, 0).tolist()


# -- a local HookedModel ------------------------------------------------------------------------
class LocalLM:
    """A ``HookedModel`` (``interplab.runtime.loading.load``) as a language model."""

    def __init__(self, model, batch_size: int = 8):
        if model.tokenizer is None:
            raise InputError("LocalLM needs a model with a tokenizer (prompts are text).")
        self.model, self.batch_size = model, batch_size
        self._weights: str | None = None
        self._vocab: list[str] | None = None
        self._answer_ids: dict[tuple, list[torch.Tensor]] = {}

    def identity(self) -> dict:
        if self._weights is None:
            from interplab.activations.harvest import weights_hash

            self._weights = weights_hash(self.model)
        src = self.model.source
        template = getattr(self.model.tokenizer, "chat_template", None) or ""
        return {"backend": "local", "model": src.get("name") or src.get("source") or type(self.model.hf).__name__,
                "weights": self._weights, "chat_template": template if isinstance(template, str) else repr(template)}

    def encode(self, messages: Messages) -> list[int]:
        tok = self.model.tokenizer
        if isinstance(getattr(tok, "chat_template", None), str) and tok.chat_template:
            text = tok.apply_chat_template(as_messages(messages), tokenize=False, add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(render_plain(messages))["input_ids"]
        if not ids:
            raise InputError("The prompt tokenizes to nothing.")
        return list(ids)

    def stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for value in (getattr(self.model.tokenizer, "eos_token_id", None),
                      getattr(getattr(self.model.hf, "generation_config", None), "eos_token_id", None)):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        return ids

    def complete(self, messages: Messages, max_tokens: int = 64) -> str:
        from interplab.runtime.generate import generate

        ids = torch.tensor([self.encode(messages)], device=self.model.device)
        new = generate(self.model, ids, max_tokens).new_tokens[0].tolist()
        stops = self.stop_ids()
        cut = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
        return self.model.tokenizer.decode(new[:cut], skip_special_tokens=True)

    def _candidate_ids(self, candidates: Sequence[str], d_vocab: int) -> list[torch.Tensor]:
        key = (tuple(candidates), d_vocab)
        if key not in self._answer_ids:
            tok = self.model.tokenizer
            if self._vocab is None:
                n = min(len(tok), d_vocab)
                special = set(getattr(tok, "all_special_ids", []) or [])
                texts = tok.batch_decode([[i] for i in range(n)])
                self._vocab = ["" if i in special else t for i, t in enumerate(texts)]
            found: list[list[int]] = [[] for _ in candidates]
            for i, text in enumerate(self._vocab[:d_vocab]):
                hit = answers(text, candidates)
                if len(hit) == 1:
                    found[hit[0]].append(i)
            self._answer_ids[key] = [torch.tensor(f, dtype=torch.long) for f in found]
        return self._answer_ids[key]

    def next_logprobs(self, prompts: Sequence[Messages]) -> torch.Tensor:
        """The full next-token log-probabilities [n_prompts, d_vocab] (batched, left-padded)."""
        rows = [self.encode(p) for p in prompts]
        tok = self.model.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        out = []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            width = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, r in enumerate(chunk):
                ids[i, width - len(r):] = torch.tensor(r)
                mask[i, width - len(r):] = 1
            dev = self.model.device
            inputs = ids.to(dev) if bool(mask.all()) else {"input_ids": ids.to(dev), "attention_mask": mask.to(dev)}
            out.append(self.model.run(inputs)[:, -1].float().log_softmax(-1).cpu())
        return torch.cat(out)

    def logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str]) -> list[dict[str, float]]:
        if not prompts:
            return []
        logp = self.next_logprobs(prompts).double()
        groups = self._candidate_ids(candidates, logp.shape[-1])
        result = []
        for row in logp:
            result.append({c: (float(torch.logsumexp(row[g], 0)) if len(g) else -math.inf)
                           for c, g in zip(candidates, groups, strict=True)})
        return result


# -- an OpenAI-compatible server ----------------------------------------------------------------
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
