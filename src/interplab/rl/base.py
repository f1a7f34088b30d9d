"""The reward-function base class: TRL's signature, text normalisation and the finite check.

A reward function is called as TRL's ``GRPOTrainer`` calls one: ``fn(prompts, completions,
**kwargs) -> list[float]``. Prompts and completions arrive either as strings or in TRL's
conversational form (a list of ``{"role", "content"}`` messages); ``__call__`` turns both into
text, refuses empty completions (or scores them ``empty_value``), calls the subclass's
``score`` and refuses a NaN or infinite reward, naming the reward and the prompt, so a broken
reward stops training at its first step instead of silently poisoning the advantages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from interplab.core.errors import InputError


def _short(text: str, n: int = 80) -> str:
    text = str(text)
    return repr(text if len(text) <= n else text[: n - 3] + "...")


def message_text(item, role: str | None = None) -> str:
    """A prompt or completion as text: a string as is; a list of chat messages as the content
    of its ``role`` messages (all of them when ``role`` is None), joined by newlines."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and "content" in item:
        item = [item]
    if isinstance(item, Sequence) and all(isinstance(m, dict) and "content" in m for m in item):
        msgs = [m for m in item if role is None or m.get("role") == role]
        if role is not None and not msgs:
            roles = sorted({str(m.get("role")) for m in item})
            raise InputError(f"A conversational completion has no {role!r} message (roles: "
                             f"{', '.join(roles) or 'none'}); TRL passes [{{'role': 'assistant', "
                             "'content': ...}}].")
        return "\n".join(_content(m["content"]) for m in msgs)
    raise InputError(f"Expected a string or a list of chat messages ({{'role', 'content'}}); got "
                     f"{type(item).__name__}: {_short(item)}.")


def _content(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal form: [{"type": "text", "text": ...}, ...]
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content)


def prompt_texts(prompts, tokenizer=None) -> list[str]:
    """Prompts as the text the policy saw: a conversation is rendered with the tokenizer's chat
    template (with the generation prompt) when it has one, else its contents joined."""
    out = []
    for p in prompts:
        if isinstance(p, str):
            out.append(p)
        elif tokenizer is not None and getattr(tokenizer, "chat_template", None):
            out.append(tokenizer.apply_chat_template(list(p), tokenize=False,
                                                     add_generation_prompt=True))
        else:
            out.append(message_text(p))
    return out


class RewardFn:
    """Base class of every reward: subclasses implement ``score(prompts, completions)`` on text.

    ``empty_value``: None (the default) raises on an empty completion; a number scores empty
    completions that value without reading anything (useful once training is under way, where a
    policy may emit EOS at once).
    """

    name: str = "reward"
    empty_value: float | None = None
    # TRL reads ``__name__`` to label a reward function's column in its logs.

    @property
    def __name__(self) -> str:
        return self.name

    def score(self, prompts: list[str], completions: list[str]) -> list[float]:
        raise NotImplementedError

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise InputError(f"Reward {self.name!r}: {len(prompts)} prompts but "
                             f"{len(completions)} completions; give one prompt per completion.")
        if len(completions) == 0:
            return []
        texts = [message_text(c, None if isinstance(c, str) else "assistant") for c in completions]
        ptexts = prompt_texts(prompts, getattr(self, "tokenizer", None))
        empty = [i for i, t in enumerate(texts) if t == ""]
        if empty and self.empty_value is None:
            i = empty[0]
            raise InputError(f"Reward {self.name!r}: completion {i} is empty (prompt "
                             f"{_short(ptexts[i])}); there is nothing to score. Empty completions: "
                             f"{empty[:10]}. Set empty_value=<float> to score them instead.")
        keep = [i for i in range(len(texts)) if texts[i] != ""]
        out = [float(self.empty_value)] * len(texts) if empty else [0.0] * len(texts)
        if keep:
            got = self.score([ptexts[i] for i in keep], [texts[i] for i in keep])
            if len(got) != len(keep):
                raise InputError(f"Reward {self.name!r} returned {len(got)} values for "
                                 f"{len(keep)} completions.")
            for i, v in zip(keep, got, strict=True):
                out[i] = float(v)
        check_finite(self.name, out, ptexts)
        return out


def check_finite(name: str, values: list[float], prompts: list[str]) -> None:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        i = bad[0]
        raise InputError(f"Reward {name!r} returned {values[i]} for example {i} (prompt "
                         f"{_short(prompts[i])}); a reward must be finite. Non-finite examples: "
                         f"{bad[:10]}. Check the artifact it reads (NaN weights?) or the checker.")
