import sys

import pytest
import torch

from interplab.core.errors import InputError, MissingDependencyError, ModelNotFoundError
from interplab.models import loading
from interplab.runtime.inputs import batch_from_ids


def test_positions_follow_the_attention_mask():
    ids = torch.tensor([[0, 0, 5, 6], [1, 2, 3, 4]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    batch = batch_from_ids(ids, mask)
    assert batch.positions.tolist() == [[-1, -1, 0, 1], [0, 1, 2, 3]]
    assert batch.lengths.tolist() == [2, 4]
    assert batch.padded and "position_ids" in batch.hf_kwargs()
    assert set(batch_from_ids(ids).hf_kwargs()) == {"input_ids"}  # exactly what a user passes


@pytest.mark.parametrize(
    "ids, mask, message",
    [
        (torch.zeros(2, 0, dtype=torch.long), None, "Empty batch"),
        (torch.zeros(2, 3), None, "integer tensor"),
        (torch.zeros(2, 3, dtype=torch.long), torch.tensor([[1, 1, 1], [0, 0, 0]]), "no real tokens"),
        (torch.zeros(1, 3, dtype=torch.long), torch.tensor([[1, 0, 1]]), "contiguous"),
    ],
)
def test_bad_inputs(ids, mask, message):
    with pytest.raises(InputError, match=message):
        batch_from_ids(ids, mask)


def test_unknown_model_names_the_defaults():
    with pytest.raises(ModelNotFoundError, match="Unknown model 'smollm3'. Embedded defaults: 'smollm2-135m', 'gemma3-270m'"):
        loading.resolve("smollm3")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelNotFoundError, match="without config.json"):
        loading.resolve(str(tmp_path))


def test_gguf_without_its_optional_dependencies(monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"needs the optional packages gguf.*pip install 'interplab\[gguf\]'"):
        loading.require_gguf()


def test_gguf_file_resolves_without_conversion(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert loading.resolve(str(f))[0] == "gguf"



def test_the_name_asked_for_wins_over_the_cached_metadata():
    merged = loading.merge_source({"name": "smollm2-135m", "default": True},
                                  {"name": None, "gguf_sha256": "abc"})
    assert merged == {"name": "smollm2-135m", "default": True, "gguf_sha256": "abc"}
