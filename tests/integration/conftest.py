"""Session fixtures: every test taking ``family`` / ``hf_model`` / ``model`` runs per family.

``model`` wraps the shared HF model in a fresh ``HookedModel`` and, on teardown, fails the test
if a torch hook was left on the HF modules or a parameter's ``requires_grad`` changed (then
cleans up, so one leak does not cascade into every later test).
"""

from __future__ import annotations

import pytest
import torch

from interplab.runtime import HookedModel

from .families import (
    FAMILIES,
    PROMPT_LENGTHS,
    ForwardCounter,
    build,
    left_pad,
    remove_torch_hooks,
    tokens,
    torch_hooks,
)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama with a character tokenizer, saved to disk (load it by path)."""
    from .test_harvest import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    """``tiny_dir`` loaded as a HookedModel."""
    from interplab.runtime.loading import load

    return load(tiny_dir)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small plain-text corpus of random words."""
    from .test_harvest import write_corpus

    return write_corpus(tmp_path_factory.mktemp("corpus") / "docs.txt")


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    """Tiny models run faster on one thread, and many times faster when the 2 cores are
    shared with other work; restored after this package so other tiers are unaffected."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # what runs' threads=auto resolves to (core.hardware)
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", params=FAMILIES, ids=str)
def family(request):
    return request.param


@pytest.fixture(scope="session")
def hf_model(family):
    return build(family.name)


@pytest.fixture
def model(hf_model):
    flags = {n: p.requires_grad for n, p in hf_model.named_parameters()}
    hooked = HookedModel(hf_model)
    yield hooked
    leaked = torch_hooks(hf_model)
    changed = [n for n, p in hf_model.named_parameters() if p.requires_grad != flags[n]]
    remove_torch_hooks(hf_model)
    for n, p in hf_model.named_parameters():
        p.requires_grad_(flags[n])
    assert leaked == 0, f"{leaked} torch hooks left on the HF model"
    assert not changed, f"requires_grad changed on {changed}"


@pytest.fixture
def forward_calls(model):
    counter = ForwardCounter(model.hf)
    yield counter
    counter.remove()


@pytest.fixture(scope="session")
def ids() -> torch.Tensor:
    """Two unpadded prompts of 7 tokens."""
    return tokens(2, 7)


@pytest.fixture(scope="session")
def prompts() -> list[torch.Tensor]:
    """Three prompts of different lengths (7, 4, 5)."""
    return [tokens(n, seed=10 + i) for i, n in enumerate(PROMPT_LENGTHS)]


@pytest.fixture(scope="session")
def padded(prompts) -> dict:
    """The three prompts left-padded into one batch: input_ids and attention_mask."""
    return left_pad(prompts)
