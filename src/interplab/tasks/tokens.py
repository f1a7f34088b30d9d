"""Tokenizer helpers shared by the tasks: word tokens, template filling, word → token positions.

Prompts are tokenized exactly as ``interplab.runtime.inputs.encode`` does (each prompt on its
own, with the tokenizer's default special tokens), so positions found here index the tokens
``HookedModel.run`` sees.
"""

from __future__ import annotations

import re

from interplab.core.errors import ConfigError

_SLOT = re.compile(r"\[([A-Z][A-Z0-9_]*)\]")


def prompt_ids(tokenizer, text: str) -> list[int]:
    """A prompt's ids as ``runtime.inputs.encode`` makes them (default special tokens)."""
    return list(tokenizer(text)["input_ids"])


def word_ids(tokenizer, word: str) -> list[int]:
    """The ids of a continuation word (e.g. ``" Mary"``), without special tokens."""
    return list(tokenizer(word, add_special_tokens=False)["input_ids"])


def pieces(tokenizer, ids) -> list[str]:
    """Each id decoded on its own: how an error shows where a word was split."""
    return [tokenizer.decode([int(i)]) for i in ids]


def fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """Fill ``[SLOT]`` placeholders; return the text and each slot's character spans.

    A span includes the space before the slot, because BPE tokenizers fold a word's leading
    space into its token (`` Mary``), so the span covers exactly the word's tokens.
    """
    out: list[str] = []
    spans: dict[str, list[tuple[int, int]]] = {}
    cursor = 0
    length = 0
    for match in _SLOT.finditer(template):
        out.append(template[cursor : match.start()])
        length += match.start() - cursor
        value = values[match.group(1)]
        start = length - 1 if length and out[-1].endswith(" ") else length
        out.append(value)
        length += len(value)
        spans.setdefault(match.group(1), []).append((start, length))
        cursor = match.end()
    out.append(template[cursor:])
    return "".join(out), spans


def _common_prefix(a: list[int], b: list[int]) -> int:
    k = 0
    while k < len(a) and k < len(b) and a[k] == b[k]:
        k += 1
    return k


def token_positions(tokenizer, text: str, ids: list[int], span: tuple[int, int]) -> list[int]:
    """Prompt positions of the tokens covering ``text[start:end]`` (empty if none align).

    The span starts where ``text[:start]``'s tokens stop matching the prompt's and ends where
    ``text[:end]``'s do: a tokenizer-agnostic rule that needs no offset mapping.
    """
    start, end = span
    first = _common_prefix(ids, prompt_ids(tokenizer, text[:start]))
    last = _common_prefix(ids, prompt_ids(tokenizer, text[:end]))
    return list(range(first, last))


def check_appends_nothing(tokenizer) -> None:
    """Refuse tokenizers that append special tokens (an EOS) to every prompt: the last token
    would not be the prompt's, and "the next token" would mean nothing."""
    text = "The capital of France is"
    plain = word_ids(tokenizer, text)
    full = prompt_ids(tokenizer, text)
    if full[len(full) - len(plain) :] != plain:
        raise ConfigError(
            f"This tokenizer appends special tokens to every prompt ({pieces(tokenizer, full)!r} "
            f"for {text!r}), so a prompt does not end with its own last token and a next-token "
            "task cannot be built. Load the tokenizer with add_eos_token=False (or the like)."
        )
