"""The server's settings: what it serves and the limits every request is held to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything ``create_app`` needs besides the model, engine and artifacts."""

    model_name: str = "smollm2-135m"  # the id clients send as "model" (and the runner loads for jobs)
    token: str | None = None  # bearer token; None: no authentication (loopback only)
    max_new_tokens: int = 512  # cap on max_tokens
    max_prompt_tokens: int = 4096  # cap on a prompt's length in tokens
    max_body_bytes: int = 1 << 20  # cap on a request body (base64 vectors make bodies large)
    max_interventions: int = 16  # cap on interplab.interventions per request
    max_jobs: int = 16  # analysis jobs queued or running at once
    runs_dir: Path = field(default_factory=lambda: Path("runs") / "serve")  # where analysis jobs write
    retry_after_s: int = 1  # the Retry-After of a 429
