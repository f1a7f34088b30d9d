"""The language models that write and judge explanations: a local ``HookedModel`` (``LocalLM``,
here) or any OpenAI-compatible server (``EndpointLM``, llm_endpoint.py), behind one interface.

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

import math
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
