"""Tasks against a real tokenizer (SmolLM2-135M's, from the default model cache, offline):
every task yields n=100 aligned pairs whose answers are single tokens that decode to the
intended words, and whose rows are exactly what ``encode`` (so ``HookedModel.run``) produces."""

from __future__ import annotations

import pytest
import torch

from interplab.core.errors import ConfigError, MissingDependencyError, ModelNotFoundError
from interplab.runtime.inputs import encode
from interplab.tasks import TASKS, TaskConfig, make_task

N = 100


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from interplab.models.loading import convert_gguf, resolve

    try:
        directory = convert_gguf(resolve("smollm2-135m")[1])
    except (ModelNotFoundError, MissingDependencyError) as err:
        pytest.skip(f"default model smollm2-135m unavailable: {err}")
    return AutoTokenizer.from_pretrained(str(directory))


@pytest.fixture(scope="session")
def tasks(tokenizer):
    return {name: make_task(name, tokenizer, TaskConfig(n=N)) for name in TASKS.names()}


@pytest.mark.parametrize("name", TASKS.names())
def test_pairs_align_and_answers_are_the_intended_single_tokens(tokenizer, tasks, name):
    data = tasks[name]
    assert len(data) == N and data.clean.shape == data.corrupt.shape
    assert torch.equal(data.clean.lengths, data.corrupt.lengths)
    for i in range(N):
        assert data.clean_text[i] != data.corrupt_text[i]
        for ids, words in ((data.answers, "answer_words"), (data.wrong, "wrong_words")):
            word = data.meta[words][i]
            assert tokenizer(word, add_special_tokens=False)["input_ids"] == [int(ids[i])]
            assert tokenizer.decode([int(ids[i])]) == word
        n = int(data.clean.lengths[i])
        assert torch.equal(data.clean.input_ids[i, -n:], encode(tokenizer, [data.clean_text[i]]).input_ids[0])
        assert torch.equal(data.corrupt.input_ids[i, -n:], encode(tokenizer, [data.corrupt_text[i]]).input_ids[0])


def test_ioi_positions_hold_the_names(tokenizer, tasks):
    data = tasks["ioi"]
    for i in range(N):
        row = data.clean.input_ids[i]
        pos = {k: data.column(i, data.meta[f"{k}_positions"][i]) for k in ("io", "s1", "s2")}
        assert tokenizer.decode([int(row[pos["io"]])]) == f" {data.meta['io_names'][i]}"
        assert row[pos["s1"]] == row[pos["s2"]] == data.wrong[i]


def test_facts_subject_positions_decode_to_the_country(tokenizer, tasks):
    data = tasks["facts"]
    assert len(set(data.meta["subjects"])) >= 15
    for i in range(N):
        cols = [data.column(i, p) for p in data.meta["subject_positions"][i]]
        assert tokenizer.decode(data.clean.input_ids[i, cols]) == f" {data.meta['subjects'][i]}"


def test_greater_than_uses_digits_with_this_tokenizer(tokenizer, tasks):
    data = tasks["greater_than"]
    assert data.meta["year_unit"] == "digit"  # SmolLM2 cuts numbers into single digits
    assert [tokenizer.decode([t]) for t in data.meta["year_tokens"]] == [str(d) for d in range(10)]
    with pytest.raises(ConfigError, match=r"the answer '\d\d' is 2 tokens \['\d', '\d'\]"):
        make_task("greater_than", tokenizer, TaskConfig(n=5, year_unit="pair", on_multi_token="raise"))


def test_induction_prompts_round_trip_to_the_drawn_tokens(tasks):
    data = tasks["induction"]
    for i in range(N):
        r = data.meta["sequences"][i]
        assert data.clean.input_ids[i, -(2 * len(r) - 1):].tolist() == r + r[:-1]


@pytest.mark.parametrize("name", TASKS.names())
def test_aligned_groups_give_every_role_one_position(tokenizer, tasks, name):
    """Position sweeps pool only prompts whose positions play the same role (IO, S1, S2, END, …)."""
    group = tasks[name].largest_aligned_group()
    assert len(group) >= 2
    for key in group.role_keys():
        assert len({str(v) for v in group.meta[key]}) == 1, key
    labels = group.role_labels()
    assert labels and all(0 <= p < int(group.clean.lengths[0]) for p in labels)
    if name == "ioi":
        assert len(set(group.meta["orders"])) == 1  # ABBA and BABA never pooled
        row = group.clean.input_ids[0]
        s = group.meta["s_names"][0]
        for pos, role in labels.items():
            if role in ("s1", "s2"):
                assert tokenizer.decode([int(row[group.column(0, pos)])]) == f" {s}"
