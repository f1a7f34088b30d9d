"""What ``create_ui_app`` needs besides the runs directory and the live parts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UiSettings:
    token: str | None = None  # None: no authentication (loopback only; see serve.security.check_bind)
    page_size: int = 100  # runs per index page (the API's default limit)
    max_page_size: int = 1000
    max_body_bytes: int = 1 << 16  # live requests are small JSON bodies
    max_new_tokens: int = 64  # cap on the steering playground's generations
    max_prompt_tokens: int = 256  # cap on a live prompt's tokens
