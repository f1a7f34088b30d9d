"""Fixtures of the UI's tests: one Chromium for the session (see ``browser.py``)."""

from __future__ import annotations

import pytest
import torch

from tests.integration.conftest import tiny, tiny_dir  # noqa: F401 (fixtures: the tiny random Llama)

from .browser import chromium


@pytest.fixture(scope="session")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="package", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the live pages' tiny model and artifacts (tests/ui/test_live*.py) ---------------------------
@pytest.fixture(scope="module")
def live_artifacts(tiny, tmp_path_factory):  # noqa: F811 (the imported fixture)
    """Saved directories for ``Artifacts.load``: vectors "up" (L0.resid_post) and "both" (two
    sites), probes "p" (last token) and "m" (mean), a top-k dictionary "sae" at L1.resid_post
    with a ``features/`` stub (so the feature dashboards list it)."""
    from interplab.analyses.probes import Probe
    from interplab.analyses.steering import SteeringVector
    from interplab.dictionary.base import DICTIONARIES, DictionaryConfig

    root = tmp_path_factory.mktemp("live-artifacts")
    d = tiny.dims.d_model
    g = torch.Generator().manual_seed(3)
    SteeringVector({"L0.resid_post": torch.randn(d, generator=g)}).save(root / "up")
    SteeringVector({"L0.resid_post": torch.randn(d, generator=g),
                    "L1.resid_post": torch.randn(d, generator=g)}).save(root / "both")
    for name, reduction in (("p", "last"), ("m", "mean")):
        w = torch.randn(d, generator=g)
        Probe("L1.resid_post", reduction, "logistic", w / w.norm(), w, 0.25, torch.zeros(d),
              ("calm", "excited")).save(root / name)
    sae = DICTIONARIES.get("topk")(DictionaryConfig(d_in=d, d_sae=48, k=4, input_site="L1.resid_post"))
    with torch.no_grad():
        sae.W_enc.normal_(generator=g)  # activations well above zero, so every token has latents
        sae.b_enc.add_(0.05 * torch.randn(48, generator=g))
    sae.save(root / "sae")
    stub = root / "sae" / "features"
    stub.mkdir()
    (stub / "config.json").write_text("{}")
    (stub / "stats.safetensors").write_bytes(b"")
    return {"vectors": [root / "up", root / "both"], "probes": [root / "p", root / "m"],
            "dictionaries": [root / "sae"]}
