"""The request bodies of the OpenAI-compatible API and the analysis jobs, as pydantic models.

Unknown fields are refused (``extra="forbid"``), so a misspelt option is a 400 naming it rather
than silently ignored. Limits that depend on the server's settings (``max_tokens`` against
``--max-new-tokens``, prompt length, intervention count) are checked by the handlers, which
name the field and the limit. ``top_k``, ``ignore_eos`` and ``interplab`` are interplab's own
fields (the ``openai`` client sends them through ``extra_body``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from interplab.serve.specs import SCHEMA

SEED_MAX = 2**63 - 1


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Body):
    include_usage: bool = False


Stop = Annotated[str, Field(min_length=1, max_length=256)]


class Sampling(_Body):
    """Fields shared by completions and chat completions."""

    model: str = Field(description="The served model's id (GET /v1/models).")
    temperature: float = Field(1.0, ge=0, le=2, description="0: greedy; > 0: sampling with `seed`.")
    top_p: float = Field(1.0, gt=0, le=1, description="Only 1 is supported (use top_k).")
    top_k: int | None = Field(None, ge=1, description="interplab: sample from the k most likely tokens.")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed of this request's sampler (deterministic).")
    n: int = Field(1, ge=1, description="Only 1 is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop | list[Stop] | None = Field(None, description="Stop when the text contains one (trimmed).")
    presence_penalty: float = Field(0.0, description="Only 0 is supported.")
    frequency_penalty: float = Field(0.0, description="Only 0 is supported.")
    user: str | None = None
    ignore_eos: bool = Field(False, description="interplab: keep generating past the end-of-text token.")
    interplab: Annotated[dict[str, Any], WithJsonSchema(SCHEMA)] | None = Field(
        None, description="interplab: interventions and internals to return (see docs/serving.md).")


class CompletionRequest(Sampling):
    prompt: Annotated[str, Field(max_length=1_000_000)] | list[int] = Field(
        description="A string or a list of token ids.")
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20, description="Top alternatives per token (0: the token's own).")
    echo: bool = Field(False, description="Only false is supported.")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class AnalysisRequest(_Body):
    analysis: str = Field(description="A registered analysis (GET /v1/analyses).")
    config: dict[str, Any] = Field(default_factory=dict, description="Its fields; `out` and `model` are the server's.")
