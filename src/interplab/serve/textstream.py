"""Reading a request's tokens as text, token by token: stop strings and what is safe to send.

The text is decoded from all new tokens each step (a token can change how earlier bytes
decode), and only text that can no longer change is released: a trailing replacement character
(half a UTF-8 sequence) and any tail that could be the start of a stop string are held back.
When a stop string appears, the text is cut before it and the request ends.
"""

from __future__ import annotations

import asyncio
import queue
from concurrent.futures import Executor

from interplab.serve.engine import Finished, Handle, Step


class TextStream:
    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.sent = 0  # characters released so far
        self.stopped = False
        self.text = ""

    def _decode(self) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add a token; the text that became safe to send (and ``stopped`` if a stop string appeared)."""
        self.ids.append(token)
        text = self.text = self._decode()
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            cut = max(min(hits), self.sent)
            self.stopped, self.text = True, text[:cut]
            out, self.sent = text[self.sent:cut], cut
            return out
        safe = len(text)
        while safe > self.sent and text[safe - 1] == "\ufffd":
            safe -= 1
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, safe), hold, -1):
                if stop.startswith(text[safe - k:safe]):
                    hold = k
                    break
        safe = max(self.sent, safe - hold)
        out, self.sent = text[self.sent:safe], safe
        return out

    def flush(self) -> str:
        """What is left to send at the end (nothing after a stop)."""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


def _next(handle: Handle, timeout: float):
    try:
        return next(handle.events(timeout=timeout))
    except queue.Empty:
        return None


async def events(handle: Handle, executor: Executor, disconnected=None, poll: float = 0.5):
    """The handle's Steps and its Finished, read without blocking the event loop. The request is
    cancelled when the reader goes away (a streaming client that disconnects) or when
    ``disconnected()`` says the client left while waiting."""
    loop = asyncio.get_running_loop()
    done = False
    try:
        while True:
            item = await loop.run_in_executor(executor, _next, handle, poll)
            if item is None:
                if disconnected is not None and await disconnected():
                    handle.cancel()
                continue
            yield item
            if isinstance(item, Finished):
                done = True
                return
    finally:
        if not done:
            handle.cancel()


__all__ = ["Finished", "Step", "TextStream", "events"]
