"""Labelled datasets: built-ins are deterministic, well-formed pairs; user files load or teach."""

from __future__ import annotations

import json

import pytest

from interplab.core.errors import ConfigError, InputError
from interplab.tasks.labelled import DATASETS, LabelledDataset, load_dataset_file, make_dataset


@pytest.mark.parametrize("name", ["sentiment", "truth", "language", "harmful"])
def test_builtin_datasets_are_deterministic_balanced_pairs(name):
    a, b = make_dataset(name, n=40, seed=3), make_dataset(name, n=40, seed=3)
    assert a == b
    assert make_dataset(name, n=40, seed=4) != a
    assert len(a) == 40 and sum(a.labels) == 20
    assert len(a.pairs) == 20
    for p, q in a.pairs:
        assert a.labels[p] == 1 and a.labels[q] == 0 and a.groups[p] == a.groups[q]
        assert a.texts[p] != a.texts[q]
    assert len(set(a.texts)) == len(a.texts)
    assert a.n_groups >= 5


def test_registry_lists_the_builtins():
    assert {"sentiment", "truth", "language", "harmful"} <= set(DATASETS.names())


def test_sentiment_and_truth_pairs_differ_only_in_the_concept():
    s = make_dataset("sentiment", n=20)
    p, q = s.pairs[0]
    assert s.texts[p].split()[:-1] == s.texts[q].split()[:-1]  # only the adjective differs
    t = make_dataset("truth", n=20)
    p, q = t.pairs[0]
    assert t.texts[p].rsplit(" ", 1)[0] == t.texts[q].rsplit(" ", 1)[0]


def test_make_dataset_errors():
    with pytest.raises(ConfigError, match=r"No labelled dataset named 'nope'\. Choose one of"):
        make_dataset("nope")
    with pytest.raises(ConfigError, match=r"n=3: built-in datasets are \(positive, negative\) "
                                          r"pairs, so n must be an even integer >= 2"):
        make_dataset("sentiment", n=3)
    with pytest.raises(ConfigError, match=r"Dataset 'language' has 80 texts \(40 pairs\); "
                                          r"asked for n=100\. Pass n <= 80\."):
        make_dataset("language", n=100)


def test_dataset_checks_itself():
    with pytest.raises(InputError, match="2 texts but 1 labels"):
        LabelledDataset("x", ("a", "b"), (1,), (0, 1))
    with pytest.raises(InputError, match=r"labels must be 0 or 1; found \[2\]"):
        LabelledDataset("x", ("a", "b"), (1, 2), (0, 1))


def _jsonl(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_load_jsonl_and_csv(tmp_path):
    p = _jsonl(tmp_path, [{"text": "a", "label": 1, "g": "x"}, {"text": "b", "label": 0, "g": "x"},
                          {"text": "c", "label": 1, "g": "y"}])
    d = load_dataset_file(p, group_field="g")
    assert d.texts == ("a", "b", "c") and d.labels == (1, 0, 1) and d.groups == (0, 0, 1)
    assert d.label_names == ("0", "1") and d.pairs == () and d.name == "d"
    c = tmp_path / "d.csv"
    c.write_text("sentence,truth\nhello,True\nbye,false\n")
    d = load_dataset_file(c, text_field="sentence", label_field="truth")
    assert d.labels == (1, 0) and d.label_names == ("false", "true") and d.groups == (0, 1)
    d = load_dataset_file(_jsonl(tmp_path, [{"text": "a", "label": "spam"},
                                            {"text": "b", "label": "ham"}], "s.jsonl"))
    assert d.labels == (1, 0) and d.label_names == ("ham", "spam")  # sorted order


def test_load_errors_teach(tmp_path):
    with pytest.raises(InputError, match=r"Dataset file .*missing\.jsonl does not exist\. Pass a "
                                         r"\.jsonl file"):
        load_dataset_file(tmp_path / "missing.jsonl")
    empty = tmp_path / "e.csv"
    empty.write_text("text,label\n")
    with pytest.raises(InputError, match=r"has no rows; it needs one row per text with fields "
                                         r"'text' and 'label'"):
        load_dataset_file(empty)
    p = _jsonl(tmp_path, [{"text": "a", "label": 1}, {"sentence": "b", "label": 0}])
    with pytest.raises(InputError, match=r"Row 2 of .* has no field 'text'; its fields are "
                                         r"'label', 'sentence'\. Set text_field="):
        load_dataset_file(p)
    p = _jsonl(tmp_path, [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], "o.jsonl")
    with pytest.raises(InputError, match=r"Labels of one class only: all 2 rows are 'x'; a probe "
                                         r"needs two classes"):
        load_dataset_file(p)
    p = _jsonl(tmp_path, [{"text": t, "label": t} for t in "abc"], "three.jsonl")
    with pytest.raises(InputError, match=r"take 3 values \('a', 'b', 'c'\); a probe needs "
                                         r"exactly two"):
        load_dataset_file(p)
