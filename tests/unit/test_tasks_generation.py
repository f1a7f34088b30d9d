"""Task generation against a tiny fake tokenizer: alignment, answers, determinism, and the
filter/raise policy for words the tokenizer splits. Runs every registered task (conformance)."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from interplab.core.errors import ConfigError
from interplab.runtime.inputs import encode
from interplab.tasks import TASKS, TaskConfig, make_task
from interplab.tasks.facts import CAPITALS
from interplab.tasks.ioi import NAMES
from interplab.tasks.sva import SUBJECTS
from interplab.tasks.tokens import fill, prompt_ids, token_positions

_CHUNK = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")


class FakeTokenizer:
    """Word-level tokenizer: each ' word' chunk is one token, except words in ``split`` (two
    tokens); numbers are cut into single digits (SmolLM2 style) or two-digit groups (GPT-2
    style). A fixed block of 3-letter words (' bab', ' bad', ...) gives induction a vocabulary."""

    def __init__(self, split=(), digits="single", bos=True, eos_suffix=False):
        self.split, self.digits, self.bos, self.eos_suffix = set(split), digits, bos, eos_suffix
        letters = itertools.product("bdfgklmnprst", "aeiou", "bdfgklmnprst")
        self.pieces = ["<bos>", "<pad>", "<eos>"] + [" " + "".join(w) for w in letters]
        self.ids = {p: i for i, p in enumerate(self.pieces)}
        self.pad_token_id, self.eos_token_id, self.all_special_ids = 1, 2, [0, 1, 2]

    def _id(self, piece: str) -> int:
        if piece not in self.ids:
            self.ids[piece] = len(self.pieces)
            self.pieces.append(piece)
        return self.ids[piece]

    def _cut(self, chunk: str) -> list[str]:
        word = chunk.strip()
        if word.isdigit():
            space = " " if chunk.startswith(" ") else ""
            if self.digits == "single":
                return ([space] if space else []) + list(word)
            groups = [word[i : i + 2] for i in range(0, len(word), 2)]
            return [space + groups[0], *groups[1:]]
        if word in self.split:
            half = len(chunk) // 2
            return [chunk[:half], chunk[half:]]
        return [chunk]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [self._id(p) for chunk in _CHUNK.findall(text) for p in self._cut(chunk)]
        if add_special_tokens:
            ids = ([0] if self.bos else []) + ids + ([2] if self.eos_suffix else [])
        return {"input_ids": ids}

    def decode(self, ids) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        ids = [ids] if isinstance(ids, int) else ids
        return "".join(self.pieces[i] for i in ids)

    def __len__(self) -> int:
        return len(self.pieces)


def build(name, tok=None, **kw):
    return make_task(name, tok or FakeTokenizer(), TaskConfig(**{"n": 12, **kw}))


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_makes_aligned_single_token_pairs(name):
    tok = FakeTokenizer()
    data = make_task(name, tok, TaskConfig(n=12))
    assert data.name == name and len(data) == 12
    assert data.clean.shape == data.corrupt.shape
    assert torch.equal(data.clean.lengths, data.corrupt.lengths)
    assert torch.equal(data.clean.attention_mask, data.corrupt.attention_mask)
    for i in range(len(data)):
        assert data.clean_text[i] != data.corrupt_text[i]
        assert data.answers[i] != data.wrong[i]
        assert tok.decode([int(data.answers[i])]) == data.meta["answer_words"][i]
        assert tok.decode([int(data.wrong[i])]) == data.meta["wrong_words"][i]
        n = int(data.clean.lengths[i])
        for batch, text in ((data.clean, data.clean_text[i]), (data.corrupt, data.corrupt_text[i])):
            alone = encode(tok, [text])  # exactly what HookedModel.run would see
            assert torch.equal(batch.input_ids[i, -n:], alone.input_ids[0])
        assert data.meta["end_positions"][i] == n - 1
        assert data.column(i, -1) == data.clean.shape[1] - 1
        assert data.clean.input_ids[i, data.column(i, 0)] == 0  # BOS, the prompt's first token
    assert isinstance(data.n_dropped, int) and data.config == TaskConfig(n=12)


@pytest.mark.parametrize("name", TASKS.names())
def test_same_seed_same_pairs_other_seed_other_pairs(name):
    a, b, c = build(name, seed=3), build(name, seed=3), build(name, seed=4)
    assert a.clean_text == b.clean_text and a.corrupt_text == b.corrupt_text
    assert torch.equal(a.answers, b.answers) and torch.equal(a.wrong, b.wrong)
    assert a.clean_text != c.clean_text


def test_ioi_names_sit_at_their_positions_and_abc_removes_them():
    tok = FakeTokenizer()
    data = build("ioi", tok, n=30)
    m = data.meta
    assert set(m["orders"]) == {"ABBA", "BABA"}
    for i in range(len(data)):
        row = data.clean.input_ids[i]
        io, s1, s2 = (data.column(i, m[k][i]) for k in ("io_positions", "s1_positions", "s2_positions"))
        assert row[io] == data.answers[i] and row[s1] == row[s2] == data.wrong[i]
        assert (m["io_positions"][i] < m["s1_positions"][i]) == (m["orders"][i] == "ABBA")
        assert m["s1_positions"][i] < m["s2_positions"][i] < m["end_positions"][i]
        bad = data.corrupt.input_ids[i]
        names = {int(bad[io]), int(bad[s1]), int(bad[s2])}
        assert len(names) == 3 and not names & {int(data.answers[i]), int(data.wrong[i])}
    only = build("ioi", n=10, ioi_order="BABA")
    assert set(only.meta["orders"]) == {"BABA"}


def test_facts_subject_positions_cover_the_country():
    tok = FakeTokenizer()
    data = build("facts", tok, n=20)
    capital = {country: cap for country, cap, _ in CAPITALS}
    for i in range(len(data)):
        country = data.meta["subjects"][i]
        cols = [data.column(i, p) for p in data.meta["subject_positions"][i]]
        assert tok.decode(data.clean.input_ids[i, cols]).strip() == country
        assert tok.decode(data.corrupt.input_ids[i, cols]).strip() != country
        assert data.meta["answer_words"][i] == f" {capital[country]}"
        assert f" {country} is" in data.clean_text[i]


def test_sva_answer_agrees_with_the_clean_subject():
    tok = FakeTokenizer()
    data = build("sva", tok, n=30)
    assert set(data.meta["singular"]) == {True, False}
    singulars = {s for s, _ in SUBJECTS}
    for i in range(len(data)):
        subject = data.meta["subjects"][i]
        singular = data.meta["singular"][i]
        assert (subject in singulars) == singular
        assert data.meta["answer_words"][i] == (" is" if singular else " are")
        [col] = [data.column(i, p) for p in data.meta["subject_positions"][i]]
        assert tok.decode([int(data.clean.input_ids[i, col])]) == f" {subject}"
        differs = (data.clean.input_ids[i] != data.corrupt.input_ids[i]).nonzero().flatten().tolist()
        assert differs == [col]  # only the subject's number changes


def test_induction_repeats_the_sequence_and_corrupt_does_not():
    tok = FakeTokenizer()
    data = build("induction", tok, n=6, induction_length=5)
    for i in range(len(data)):
        r, s = data.meta["sequences"][i], data.meta["fresh_sequences"][i]
        n = int(data.clean.lengths[i])
        assert n == 1 + 2 * 5 - 1 and data.meta["repeat_starts"][i] == 1 + 5
        assert data.clean.input_ids[i, -n:].tolist() == [0, *r, *r[:-1]]
        assert data.corrupt.input_ids[i, -n:].tolist() == [0, *r, *s[:-1]]
        assert data.answers[i] == r[-1] and data.wrong[i] == s[-1]
        assert len(set(r) | set(s)) == 10


def test_greater_than_digit_and_pair_units():
    digits = build("greater_than", FakeTokenizer(digits="single"), n=20)
    assert digits.meta["year_unit"] == "digit"
    for i, year in enumerate(digits.meta["years"]):
        assert 10 <= year <= 89
        assert digits.meta["answer_words"][i] == str(year // 10 + 1)
        assert digits.meta["wrong_words"][i] == str(year // 10 - 1)
        assert len(digits.meta["year_positions"][i]) == 2
        assert digits.corrupt_text[i].endswith(f"{digits.meta['centuries'][i]}01 to the year "
                                               f"{digits.meta['centuries'][i]}")
    tok = FakeTokenizer(digits="pair")
    pairs = build("greater_than", tok, n=20)
    assert pairs.meta["year_unit"] == "pair" and len(pairs.meta["year_tokens"]) == 100
    for i, year in enumerate(pairs.meta["years"]):
        assert tok.decode([int(pairs.answers[i])]) == f"{year + 1:02d}"
        assert tok.decode([int(pairs.wrong[i])]) == f"{year - 1:02d}"
        assert pairs.meta["year_tokens"][year + 1] == pairs.answers[i]
        [pos] = pairs.meta["year_positions"][i]
        assert tok.decode([int(pairs.clean.input_ids[i, pairs.column(i, pos)])]) == f"{year:02d}"


class MergingYears(FakeTokenizer):
    """GPT-2 style, but the years of the 1400s are one token (' 1432'), as GPT-2 has many."""

    def _cut(self, chunk):
        if chunk.startswith(" 14") and len(chunk) == 5 and chunk[3:].isdigit():
            return [chunk]
        return super()._cut(chunk)


def test_greater_than_pair_unit_drops_years_that_are_not_cut_century_plus_year():
    data = build("greater_than", MergingYears(digits="pair"), n=30)
    assert data.meta["year_unit"] == "pair" and 14 not in data.meta["centuries"]
    assert data.n_dropped > 0
    with pytest.raises(ConfigError, match=r"the year in .* 14\d\d to the year 14' is cut as "
                       r"\[' 14\d\d'\], not as century \+ the one token"):
        build("greater_than", MergingYears(digits="pair"), n=30, on_multi_token="raise")


def test_filter_drops_split_words_and_keeps_going():
    tok = FakeTokenizer(split={"Mary", "John", "Paul"})
    data = build("ioi", tok, n=40, seed=1)
    assert data.n_dropped > 0
    for text in data.clean_text + data.corrupt_text:
        assert not {"Mary", "John", "Paul"} & set(re.findall(r"\w+", text))


def test_raise_names_the_split_answer_and_its_tokens():
    tok = FakeTokenizer(split=set(NAMES))
    with pytest.raises(ConfigError, match=r"ioi: the answer ' (\w+)' is 2 tokens \[' \w+', '\w+'\], "
                       r"not one\. With on_multi_token='raise'.*on_multi_token='filter'"):
        build("ioi", tok, on_multi_token="raise")


def test_raise_names_the_word_that_breaks_equal_lengths():
    tok = FakeTokenizer(split={p for _, p in SUBJECTS})
    with pytest.raises(ConfigError, match=r"sva: the clean prompt .* is \d+ tokens but the corrupt "
                       r"prompt .* is \d+: ' \w+' is [12] tokens? \[.*\] but ' \w+' is [12] tokens? \["):
        build("sva", tok, on_multi_token="raise")


def test_filter_gives_up_with_the_reason_when_nothing_survives():
    with pytest.raises(ConfigError, match=r"ioi: only 0 of the 5 pairs asked for survived after "
                       r"\d+ candidates.*Most common reason"):
        build("ioi", FakeTokenizer(split=set(NAMES)), n=5)
    with pytest.raises(ConfigError, match=r"greater_than: only 0 of .*year_unit='digit'"):
        build("greater_than", FakeTokenizer(digits="single"), n=3, year_unit="pair")
    with pytest.raises(ConfigError, match=r"the answer '\d\d' is 2 tokens \['\d', '\d'\]"):
        build("greater_than", FakeTokenizer(digits="single"), year_unit="pair", on_multi_token="raise")


def test_refuses_a_tokenizer_that_appends_eos():
    with pytest.raises(ConfigError, match="appends special tokens to every prompt"):
        build("sva", FakeTokenizer(eos_suffix=True))


def test_fill_spans_include_the_leading_space_and_map_to_tokens():
    text, spans = fill("When [A] and [B] met,[B] left [X][Y]", {"A": "Mary", "B": "Jo", "X": "17", "Y": "32"})
    assert text == "When Mary and Jo met,Jo left 1732"
    assert [text[slice(*s)] for s in spans["A"] + spans["B"]] == [" Mary", " Jo", "Jo"]
    assert text[slice(*spans["Y"][0])] == "32"
    tok = FakeTokenizer(split={"Mary"})
    ids = prompt_ids(tok, text)
    assert tok.decode([ids[p] for p in token_positions(tok, text, ids, spans["A"][0])]) == " Mary"
    assert token_positions(tok, text, ids, spans["A"][0]) == [2, 3]  # BOS, When, Ma, ry
