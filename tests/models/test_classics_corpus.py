"""The default corpus is big enough to harvest a million tokens with the default model: the
King James Bible and Shakespeare's plays are each over 1M SmolLM2 tokens, and packing them into
contexts of 128 keeps over 1M rows after the BOS positions are dropped."""

from __future__ import annotations

import pytest

from interplab.activations import CorpusConfig, iter_documents
from interplab.activations.classics import kjv_chapters, plays
from interplab.activations.packing import iter_contexts
from interplab.core.errors import MissingDependencyError, ModelNotFoundError


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interplab.models.loading import convert_gguf, resolve

    try:
        directory = convert_gguf(resolve("smollm2-135m")[1])
    except (ModelNotFoundError, MissingDependencyError) as err:
        pytest.skip(f"default model smollm2-135m unavailable: {err}")
    return AutoTokenizer.from_pretrained(str(directory))


def n_tokens(tokenizer, docs) -> int:
    return sum(len(ids) for ids in tokenizer(list(docs), add_special_tokens=False, verbose=False)["input_ids"])


@pytest.mark.models
def test_each_classic_is_over_a_million_tokens(tokenizer):
    assert n_tokens(tokenizer, kjv_chapters()) > 1_000_000
    assert n_tokens(tokenizer, plays()) > 1_000_000


@pytest.mark.models
def test_classics_pack_into_over_a_million_rows(tokenizer):
    n_contexts = sum(1 for _ in iter_contexts(tokenizer, iter_documents(CorpusConfig()), 128))
    assert n_contexts * 127 > 2_000_000
