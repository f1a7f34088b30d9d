"""Analysis jobs: any registered analysis, run from a config sent over HTTP, one at a time.

A job's config is built by the registry's own ``build_config`` when it is submitted, so a bad
analysis name or field is a 400 naming it (with the valid choices) before anything runs. The
server owns where things are written and what is loaded: ``out`` is a directory of its runs
folder and ``model`` is the served model's name, and fields that name files or directories
take only plain names (``classics``, ``sentiment``), never paths. Jobs run in one worker thread
through the runner, which loads its own copy of the model: the serving model never carries an
analysis's hooks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from interplab.core.config import build_config
from interplab.core.errors import choices, did_you_mean
from interplab.serve.errors import RequestError
from interplab.serve.settings import Settings

log = logging.getLogger(__name__)

SERVER_FIELDS = ("out", "model")  # set by the server, refused from requests
PATH_FIELDS = ("store", "dictionary", "steer", "corpus", "dataset")  # also any field whose help says file/directory
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]*$")


def takes_path(f: dataclasses.Field) -> bool:
    text = f.metadata.get("help", "").lower()
    return f.name in PATH_FIELDS or "file" in text or "directory" in text


def _plain(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return list(value) if isinstance(value, tuple) else str(value)


def describe(entry) -> dict:
    fields = []
    for f in dataclasses.fields(entry.config):
        if not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields.append({"name": f.name, "help": f.metadata.get("help", ""), "required": required,
                       "default": _plain(default), "set_by_server": f.name in SERVER_FIELDS,
                       "plain_name_only": takes_path(f) and f.name not in SERVER_FIELDS})
    return {"name": entry.name, "help": entry.help, "fields": fields}


@dataclass
class Job:
    id: str
    analysis: str
    config: object
    status: str = "queued"  # queued, running, done, failed
    error: str | None = None
    phase: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    path: Path | None = None

    def public(self) -> dict:
        return {"id": self.id, "analysis": self.analysis, "status": self.status, "error": self.error,
                "phase": self.phase, "created": self.created, "started": self.started,
                "finished": self.finished, "run": self.path.name if self.path else None}


class Jobs:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def registry(self):
        from interplab.core.analysis import load_analyses

        return load_analyses()

    def catalogue(self) -> list[dict]:
        return [describe(entry) for _, entry in self.registry().items()]

    def build(self, name: str, data: dict, out: Path):
        registry = self.registry()
        if name not in registry:
            raise RequestError(f"analysis: no analysis named {name!r}.{did_you_mean(name, registry.names())} "
                               f"Valid: {choices(registry.names())}.", "analysis")
        entry = registry.get(name)
        for key in data:
            if key in SERVER_FIELDS:
                raise RequestError(f"config.{key}: set by the server (out: its runs directory; model: the "
                                   f"served model {self.settings.model_name!r}); leave it out.", f"config.{key}")
        fields = {f.name: f for f in dataclasses.fields(entry.config)}
        for key, value in data.items():
            f = fields.get(key)
            values = value if isinstance(value, (list, tuple)) else [value]
            if f is not None and takes_path(f) and not all(PLAIN_NAME.match(str(v)) for v in values):
                raise RequestError(f"config.{key}: the server takes no file paths; give a built-in name "
                                   f"(letters, digits, '-' and '_'), got {value!r}.", f"config.{key}")
        config = build_config(entry.config, {**data, "out": str(out), "model": self.settings.model_name},
                              f"config of {name!r}")
        return entry.name, config

    def submit(self, name: str, data: dict) -> Job:
        job_id = uuid.uuid4().hex[:16]
        analysis, config = self.build(name, data, Path(self.settings.runs_dir) / job_id)
        with self._lock:
            pending = sum(j.status in ("queued", "running") for j in self.jobs.values())
            if pending >= self.settings.max_jobs:
                raise RequestError(f"{pending} analysis jobs are queued or running (the limit is "
                                   f"{self.settings.max_jobs}); retry later.", None, 429,
                                   headers={"Retry-After": "10"})
            job = self.jobs[job_id] = Job(job_id, analysis, config)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="interplab-jobs", daemon=True)
                self._thread.start()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(f"id: no analysis job {job_id!r} (POST /v1/analyses starts one).", "id",
                               404, "not_found_error")
        return job

    def record(self, job_id: str) -> dict:
        job = self.get(job_id)
        if job.status != "done" or job.path is None:
            raise RequestError(f"id: job {job_id!r} is {job.status}"
                               + (f" ({job.error})" if job.error else "") + "; its record exists once it is done.",
                               "id", 409)
        results = json.loads((job.path / "results.json").read_text())
        files = sorted(str(p.relative_to(job.path)) for p in job.path.rglob("*") if p.is_file())
        return {"id": job.id, "analysis": job.analysis, "run": job.path.name, "results": results, "files": files}

    def close(self) -> None:
        self._queue.put(None)

    def _work(self) -> None:
        from interplab.runs.runner import run_analysis

        while True:
            job = self._queue.get()
            if job is None:
                return
            job.status, job.started = "running", time.time()
            try:
                outcome = run_analysis(job.analysis, job.config, progress=False,
                                       phase=lambda text, job=job: setattr(job, "phase", text))
                job.path, job.status = outcome.path, "done"
            except Exception as err:  # a failed job is reported, never takes the server down
                log.warning("analysis job %s (%s) failed: %s", job.id, job.analysis, err)
                job.status, job.error = "failed", f"{type(err).__name__}: {err}"
            job.finished = time.time()
