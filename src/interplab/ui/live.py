"""The UI's live model: loaded in the background, shared by the prompt explorer and the steering
playground, and run only through the serving ``Engine``.

``Live.start(name, vectors=, probes=, dictionaries=, settings=)`` returns at once; a background
thread loads the model, the named artifacts (``serve.specs.Artifacts``, the same loading and
checks as ``interplab serve``) and starts an ``Engine``. ``status()`` says where that stands
(``{"state": "loading" | "ready" | "error", "model", "error"}``); ``require()`` hands the parts
to a request or raises ``LiveUnavailable`` (503 while loading, 500 after a failed load), which
the live routes turn into a JSON error. ``Live.from_model(model, artifacts)`` wraps a model
already loaded (tests, notebooks).

Every forward of the live pages goes through the engine, never ``model.run`` in a request
thread: the engine's thread owns the model's hooks, so a page's forward can neither see nor
disturb another request's interventions (hooks are per model, not per thread).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from interplab.core.errors import InputError, InterplabError
from interplab.serve.engine import Engine, Finished, GenRequest, QueueFull
from interplab.serve.specs import Artifacts
from interplab.ui.settings import UiSettings

log = logging.getLogger(__name__)

RESULT_TIMEOUT_S = 600.0  # one live request's engine work (generous: the CPU may be shared)


class LiveUnavailable(Exception):
    """The live model cannot answer: still loading (503), failed to load (500), busy (429),
    closed (503) or too slow (504)."""

    def __init__(self, message: str, status: int = 503, retry_after: int | None = None):
        super().__init__(message)
        self.message, self.status, self.retry_after = message, status, retry_after


@dataclass
class Loaded:
    """What a live request works with."""

    name: str
    model: object  # runtime.HookedModel
    artifacts: Artifacts
    engine: Engine


class Live:
    """The live model's lifecycle (see the module docstring)."""

    def __init__(self, name: str, settings: UiSettings | None = None):
        self.name, self.settings = str(name), settings or UiSettings()
        self._state, self._error, self._loaded = "loading", None, None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._closed = False
        self._started = time.monotonic()
        self.tokenizer_lock = threading.Lock()  # a fast tokenizer is not safe to share across threads

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def start(cls, model_name: str, vectors: Sequence = (), probes: Sequence = (), dictionaries: Sequence = (),
              settings: UiSettings | None = None, *, loader: Callable | None = None,
              max_batch: int = 8, max_queue: int = 64) -> Live:
        """Start loading in a background thread and return at once (``loader(name)`` gives the
        HookedModel; default ``runtime.loading.load``)."""
        live = cls(model_name, settings)

        def work():
            try:
                if loader is None:
                    from interplab.runtime.loading import load

                    model = load(model_name)
                else:
                    model = loader(model_name)
                artifacts = Artifacts.load(model, vectors=list(vectors), probes=list(probes),
                                           dictionaries=list(dictionaries))
                engine = Engine(model, max_batch=max_batch, max_queue=max_queue)
            except BaseException as err:  # every failure becomes the pages' message
                log.exception("interplab ui: loading %s failed", model_name)
                live._fail(err)
                return
            live._ready(Loaded(live.name, model, artifacts, engine))

        threading.Thread(target=work, name="interplab-ui-load", daemon=True).start()
        return live

    @classmethod
    def from_model(cls, model, artifacts: Artifacts | None = None, name: str | None = None,
                   settings: UiSettings | None = None, max_batch: int = 8, max_queue: int = 64) -> Live:
        """A live model that is ready now: ``model`` (a HookedModel) and its loaded artifacts."""
        name = name or (getattr(model, "source", {}) or {}).get("name") or type(model.hf).__name__
        live = cls(name, settings)
        live._ready(Loaded(live.name, model, artifacts or Artifacts(),
                           Engine(model, max_batch=max_batch, max_queue=max_queue)))
        return live

    def _ready(self, loaded: Loaded) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._loaded, self._state = loaded, "ready"
        if closed:  # closed while loading: nobody will use it
            loaded.engine.close()
        self._done.set()

    def _fail(self, err: BaseException) -> None:
        message = str(err) if isinstance(err, InterplabError) else f"{type(err).__name__}: {err}"
        with self._lock:
            self._error, self._state = message, "error"
        self._done.set()

    # -- state ---------------------------------------------------------------------------------
    def status(self) -> dict:
        return {"state": self._state, "model": self.name, "error": self._error}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading ended (ready or error); False on timeout."""
        return self._done.wait(timeout)

    def require(self) -> Loaded:
        """The loaded parts, or ``LiveUnavailable`` saying why not."""
        with self._lock:
            state, loaded, error, closed = self._state, self._loaded, self._error, self._closed
        if closed:
            raise LiveUnavailable("The live model has been shut down.", 503)
        if state == "loading":
            waited = time.monotonic() - self._started
            raise LiveUnavailable(f"The model {self.name!r} is still loading ({waited:.0f} s so far); "
                                  "try again in a few seconds.", 503, retry_after=2)
        if state == "error":
            raise LiveUnavailable(f"The model {self.name!r} failed to load: {error} Fix that and "
                                  "restart `interplab ui` (--no-live serves the run pages alone).", 500)
        return loaded

    def close(self) -> None:
        """Stop the engine (a load still running is closed as soon as it finishes)."""
        with self._lock:
            self._closed = True
            loaded, self._loaded = self._loaded, None
        if loaded is not None:
            loaded.engine.close()

    # -- running -------------------------------------------------------------------------------
    def run(self, requests: Sequence[GenRequest], timeout: float = RESULT_TIMEOUT_S) -> list[Finished]:
        """Submit the requests together (so the engine batches them) and wait for every one."""
        engine = self.require().engine
        handles = []
        try:
            for request in requests:
                handles.append(engine.submit(request))
        except QueueFull as err:
            for handle in handles:
                handle.cancel()
            raise LiveUnavailable(f"The live model is busy: {err} Try again in a moment.", 429, retry_after=1) from None
        except BaseException:
            for handle in handles:
                handle.cancel()
            raise
        out = []
        try:
            for handle in handles:
                out.append(handle.result(timeout=timeout))
        except Exception as err:
            for handle in handles:
                handle.cancel()
            if isinstance(err, queue.Empty):
                raise LiveUnavailable(f"The live model did not answer within {timeout:.0f} s.", 504) from None
            raise
        return out


# -- helpers the live routes share ------------------------------------------------------------
def bad(message: str, param: str | None) -> InputError:
    """An ``InputError`` naming its field (the app answers it as a 400 with ``param`` set)."""
    err = InputError(message if param is None or message.startswith(f"{param}:") else f"{param}: {message}")
    err.param = param
    return err


def prompt_ids(live: Live, loaded: Loaded, prompt: str, settings: UiSettings, room: int = 1) -> list[int]:
    """The prompt's token ids, checked: not empty, at most ``max_prompt_tokens``, and leaving
    ``room`` positions of the model's context for new tokens."""
    tok = loaded.model.tokenizer
    if tok is None:
        raise bad(f"the model {loaded.name!r} has no tokenizer, so it cannot read a text prompt.", "prompt")
    with live.tokenizer_lock:
        ids = list(tok(prompt)["input_ids"])
    if not ids:
        raise bad("the prompt has no tokens; type some text.", "prompt")
    if len(ids) > settings.max_prompt_tokens:
        raise bad(f"{len(ids)} tokens is over the limit of {settings.max_prompt_tokens} "
                  "(the UI's max_prompt_tokens); shorten it.", "prompt")
    context = loaded.model.max_positions
    if context is not None and len(ids) + room > context:
        raise bad(f"{len(ids)} tokens leave no room in the model's context of {context} tokens; shorten it.",
                  "prompt")
    return ids


def token_texts(live: Live, tokenizer, ids) -> list[str]:
    """Each token id's own text (``str(id)`` without a tokenizer)."""
    if tokenizer is None:
        return [str(i) for i in ids]
    with live.tokenizer_lock:
        return [tokenizer.decode([int(i)]) for i in ids]


def decode(live: Live, tokenizer, ids) -> str:
    with live.tokenizer_lock:
        return tokenizer.decode(list(ids), skip_special_tokens=True)


def finite(x: float) -> float | None:
    """A number for JSON: None where it is NaN or infinite (a huge steering scale can overflow)."""
    x = float(x)
    return x if math.isfinite(x) else None
