"""From an OpenAI-style request body to the engine's ``GenRequest``: the prompt's token ids
(plain text, token ids or the chat template), sampling, stop tokens, the ``interplab`` spec, and
every limit checked first with a message naming the field and the limit."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from interplab.serve.engine import GenRequest
from interplab.serve.errors import RequestError
from interplab.serve.schemas import ChatRequest, CompletionRequest, Sampling
from interplab.serve.settings import Settings
from interplab.serve.specs import parse_spec


@dataclass
class Prepared:
    """A checked request: what the engine runs and what the response needs."""

    gen: GenRequest
    spec: object | None  # specs.RequestSpec when the body had an interplab object
    prompt_len: int
    stops: list[str]
    logprobs: int | None  # None: not asked; k: the token's own logprob and k alternatives


def refuse_unsupported(body: Sampling) -> None:
    if body.n != 1:
        raise RequestError(f"n: only n=1 is supported, got {body.n}; send one request per completion.", "n")
    if body.top_p != 1:
        raise RequestError(f"top_p: only 1 is supported, got {body.top_p}; use top_k (an interplab "
                           "field) to truncate sampling.", "top_p")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) != 0:
            raise RequestError(f"{name}: only 0 is supported, got {getattr(body, name)}.", name)
    if getattr(body, "echo", False):
        raise RequestError("echo: only false is supported.", "echo")


def check_model(body: Sampling, settings: Settings) -> None:
    if body.model != settings.model_name:
        raise RequestError(f"model: this server serves {settings.model_name!r}, not {body.model!r} "
                           "(GET /v1/models).", "model", status=404, kind="not_found_error")


def completion_ids(body: CompletionRequest, tokenizer) -> list[int]:
    if isinstance(body.prompt, list):
        ids = list(body.prompt)
    elif tokenizer is None:
        raise RequestError("prompt: this model has no tokenizer; send the prompt as token ids.", "prompt")
    else:
        ids = list(tokenizer(body.prompt)["input_ids"])
    if not ids:
        raise RequestError("prompt: at least one token is needed.", "prompt")
    return ids


def chat_ids(body: ChatRequest, tokenizer, model_name: str) -> list[int]:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise RequestError(f"messages: the model {model_name!r} has no chat template; use "
                           "/v1/completions with a plain prompt.", "messages")
    messages = [{"role": m.role, "content": m.content if isinstance(m.content, str)
                 else "".join(part.text for part in m.content)} for m in body.messages]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # jinja's raise_exception: e.g. roles that must alternate
        raise RequestError(f"messages: the chat template refused them: {err}", "messages") from None
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def stop_token_ids(model) -> frozenset[int]:
    """End-of-text ids from the tokenizer and the generation config."""
    ids = set()
    tok_eos = getattr(model.tokenizer, "eos_token_id", None)
    gen_eos = getattr(getattr(model.hf, "generation_config", None), "eos_token_id", None)
    for value in (tok_eos, gen_eos):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return frozenset(ids)


def prepare(body: Sampling, ids: list[int], max_tokens: int | None, logprobs: int | None,
            model, artifacts, settings: Settings, prompt_field: str) -> Prepared:
    """Check every limit, parse the interplab spec and build the engine request."""
    if len(ids) > settings.max_prompt_tokens:
        raise RequestError(f"{prompt_field}: {len(ids)} tokens is over the limit of "
                           f"{settings.max_prompt_tokens} (the server's --max-prompt-tokens).", prompt_field)
    vocab = model.dims.d_vocab
    if min(ids) < 0 or max(ids) >= vocab:
        raise RequestError(f"{prompt_field}: token ids must be in 0..{vocab - 1}.", prompt_field)
    context = getattr(model.hf.config, "max_position_embeddings", None) or (len(ids) + settings.max_new_tokens)
    room = context - len(ids)
    if room < 1:
        raise RequestError(f"{prompt_field}: {len(ids)} tokens fill the model's context of {context}.", prompt_field)
    if max_tokens is None:
        max_tokens = min(settings.max_new_tokens, room)
    if max_tokens > settings.max_new_tokens:
        raise RequestError(f"max_tokens: {max_tokens} is over the limit of {settings.max_new_tokens} "
                           "(the server's --max-new-tokens).", "max_tokens")
    if max_tokens > room:
        raise RequestError(f"max_tokens: the prompt's {len(ids)} tokens plus {max_tokens} new ones exceed "
                           f"the model's context of {context}; at most {room} fit.", "max_tokens")
    spec = None
    if body.interplab is not None:
        spec = parse_spec(body.interplab, model, artifacts, settings.max_interventions)
        spec.check(model, len(ids), max_tokens)
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    gen = GenRequest(ids, max_new_tokens=max_tokens,
                     interventions=list(spec.interventions) if spec else [],
                     do_sample=body.temperature > 0, temperature=body.temperature or 1.0,
                     top_k=min(body.top_k, vocab) if body.top_k else None, seed=body.seed,
                     capture=list(spec.capture) if spec else [],
                     top_logprobs=logprobs or 0,
                     stop_ids=frozenset() if body.ignore_eos else stop_token_ids(model))
    return Prepared(gen, spec, len(ids), stops, logprobs)


def baseline(prepared: Prepared) -> GenRequest | None:
    """The same request without its interventions, when the spec asks to compare (else None)."""
    spec = prepared.spec
    if spec is None or not spec.compare_unsteered:
        return None
    return dataclasses.replace(prepared.gen, interventions=[])

