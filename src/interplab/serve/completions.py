"""Running a prepared request on the engine and answering in OpenAI's shapes: a whole
``text_completion`` / ``chat.completion``, or server-sent ``data:`` chunks ending ``[DONE]``."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from interplab.serve.engine import Finished, Handle, Step
from interplab.serve.generation import Prepared
from interplab.serve.specs import internals
from interplab.serve.textstream import TextStream, events


@dataclass
class Call:
    """One request in flight: what kind of answer it wants and what has come back so far."""

    chat: bool
    prepared: Prepared
    handle: Handle
    served: object  # app.Served: model, artifacts, settings, executor, metrics
    include_usage: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    baseline: Handle | None = None  # the same request unsteered (interplab.compare_unsteered)
    steps: list[Step] = field(default_factory=list)
    finished: Finished | None = None
    unsteered: dict | None = None

    def __post_init__(self):
        self.text = TextStream(self.served.model.tokenizer, self.prepared.stops)
        self.started = time.perf_counter()

    @property
    def object(self) -> str:
        return ("chat.completion" if self.chat else "text_completion")

    def take(self, item) -> tuple[str, list[Step]]:
        """Read one engine event: the text it releases and the steps it adds."""
        if isinstance(item, Finished):
            self.finished = item
            self.served.metrics.finished(self)
            return ("" if self.text.stopped else self.text.flush()), []
        if self.text.stopped:  # steps the engine made before it saw the cancel
            return "", []
        self.steps.append(item)
        delta = self.text.push(item.token)
        if self.text.stopped:
            self.handle.cancel()
        return delta, [item]

    def finish_reason(self) -> str:
        if self.text.stopped or (self.finished and self.finished.reason == "stop"):
            return "stop"
        return "length"

    def usage(self) -> dict:
        n = len(self.steps)
        return {"prompt_tokens": self.prepared.prompt_len, "completion_tokens": n,
                "total_tokens": self.prepared.prompt_len + n}

    def cancel(self) -> None:
        self.handle.cancel()
        if self.baseline is not None:
            self.baseline.cancel()

    def internals(self) -> dict | None:
        if self.prepared.spec is None or self.finished is None:
            return None
        s = self.served
        out = internals(self.prepared.spec, self.finished, s.model, s.artifacts, self.prepared.prompt_len)
        if self.unsteered is not None:
            out["unsteered"] = self.unsteered
        return out

    async def read_baseline(self) -> None:
        """Wait for the unsteered run (if asked) and keep its text, tokens and internals."""
        if self.baseline is None:
            return
        text, finished = TextStream(self.served.model.tokenizer, self.prepared.stops), None
        async for item in events(self.baseline, self.served.executor):
            if isinstance(item, Finished):
                finished = item
            elif not text.stopped:
                text.push(item.token)
                if text.stopped:
                    self.baseline.cancel()
        s, spec = self.served, self.prepared.spec
        self.unsteered = {"text": text.text, "completion_tokens": len(text.ids),
                          **internals(spec.unsteered(), finished, s.model, s.artifacts, self.prepared.prompt_len)}

    # -- logprobs ------------------------------------------------------------------------------
    def _token(self, token: int) -> str:
        tok = self.served.model.tokenizer
        return tok.decode([token]) if tok is not None else str(token)

    def logprobs(self, steps: list[Step], offset: int = 0) -> dict | None:
        if self.prepared.logprobs is None:
            return None
        if self.chat:
            def entry(token, logprob):
                text = self._token(token)
                return {"token": text, "logprob": logprob, "bytes": list(text.encode())}
            return {"content": [{**entry(s.token, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
                                for s in steps]}
        tokens = [self._token(s.token) for s in steps]
        offsets, at = [], offset
        for text in tokens:
            offsets.append(at)
            at += len(text)
        return {"tokens": tokens, "token_logprobs": [s.logprob for s in steps],
                "top_logprobs": [{self._token(t): lp for t, lp in s.top} for s in steps],
                "text_offset": offsets}

    # -- whole answers -------------------------------------------------------------------------
    def head(self) -> dict:
        return {"id": ("chatcmpl-" if self.chat else "cmpl-") + self.id, "object": self.object,
                "created": self.created, "model": self.served.settings.model_name}

    def body(self) -> dict:
        text = self.text.text
        choice = {"index": 0, "logprobs": self.logprobs(self.steps), "finish_reason": self.finish_reason()}
        choice.update({"message": {"role": "assistant", "content": text}} if self.chat else {"text": text})
        out = {**self.head(), "choices": [choice], "usage": self.usage()}
        internals = self.internals()
        if internals is not None:
            out["interplab"] = internals
        return out

    # -- streaming -----------------------------------------------------------------------------
    def chunk(self, delta: str | None, steps: list[Step], finish: str | None, offset: int = 0) -> dict:
        head = {**self.head(), "object": "chat.completion.chunk" if self.chat else "text_completion"}
        choice = {"index": 0, "logprobs": self.logprobs(steps, offset) if steps else None, "finish_reason": finish}
        if self.chat:
            choice["delta"] = {} if delta is None else {"content": delta}
        else:
            choice["text"] = delta or ""
        return {**head, "choices": [choice]}


def sse(data) -> bytes:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n".encode()


async def collect(call: Call, disconnected) -> dict:
    try:
        async for item in events(call.handle, call.served.executor, disconnected):
            call.take(item)
        await call.read_baseline()
    finally:
        call.cancel()  # a no-op when both have finished
    return call.body()


async def stream(call: Call):
    """The SSE body: a role chunk (chat), one chunk per released piece of text with its tokens'
    logprobs, a final chunk with finish_reason (and the interplab object), usage if asked, [DONE]."""
    if call.chat:
        first = call.chunk(None, [], None)
        first["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        yield sse(first)
    sent = 0
    try:
        async for item in events(call.handle, call.served.executor):
            delta, steps = call.take(item)
            if delta or steps:
                yield sse(call.chunk(delta, steps, None, sent))
                sent += len(delta)
        await call.read_baseline()
    except Exception as err:  # the engine failed this request mid-way: say so, then end
        yield sse({"error": {"message": f"generation failed: {err}", "type": "server_error",
                             "param": None, "code": None}})
        yield sse("[DONE]")
        return
    finally:
        call.cancel()  # the client left (or all is done: then a no-op)
    last = call.chunk(None if call.chat else "", [], call.finish_reason())
    internals = call.internals()
    if internals is not None:
        last["interplab"] = internals
    yield sse(last)
    if call.include_usage:
        yield sse({**call.head(), "object": "chat.completion.chunk" if call.chat else "text_completion",
                   "choices": [], "usage": call.usage()})
    yield sse("[DONE]")
