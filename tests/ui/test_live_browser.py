"""The live pages in headless Chromium over the tiny model: the prompt explorer shows the model's
own top next token, the logit lens and an attention heatmap per layer and head, and dictionary
latents linking to their dashboards; the steering playground shows both generations, the steered
one equal to the library's and moving with the scale; zero console errors, nothing requested
off loopback, and screenshots of both pages."""

from __future__ import annotations

import pytest
import torch

from interplab.analyses.steering import from_dictionary
from interplab.runtime.generate import generate
from interplab.serve.specs import Artifacts
from interplab.ui.app import create_ui_app
from interplab.ui.features import Features
from interplab.ui.live import Live
from interplab.ui.settings import UiSettings
from tests.integration.serving import live as serving

from .browser import tab

PROMPT = "the cat sat on the"


@pytest.fixture(scope="module")
def site(tiny, live_artifacts, tmp_path_factory):
    arts = Artifacts.load(tiny, **live_artifacts)
    live = Live.from_model(tiny, arts, name="tiny-llama")
    features = Features.of([(live_artifacts["dictionaries"][0] / "features", "sae")])
    app = create_ui_app(tmp_path_factory.mktemp("runs"), UiSettings(max_new_tokens=12, max_prompt_tokens=40),
                        features=features, live=live)
    try:
        with serving(app) as url:
            yield url, tiny, arts
    finally:
        live.close()


def library_text(model, interventions=(), n=12) -> str:
    ids = model.tokenizer(PROMPT)["input_ids"]
    new = generate(model, torch.tensor([ids]), n, interventions).new_tokens[0].tolist()
    if 2 in new:  # the engine stops after the end-of-text token
        new = new[: new.index(2) + 1]
    return model.tokenizer.decode(new, skip_special_tokens=True)


def test_explorer_page(browser, site):
    url, model, _ = site
    ids = model.tokenizer(PROMPT)["input_ids"]
    top = int(model.run(torch.tensor([ids]))[0, -1].argmax())
    with tab(browser, url) as t:
        page = t.open("/explore")
        assert "tiny-llama" in page.text_content("#live-status")
        page.fill("#prompt", PROMPT)
        page.click("#explore-run")
        page.wait_for_selector("#predictions tbody tr")
        first = page.locator("#predictions tbody tr").first
        assert int(first.get_attribute("data-id")) == top
        assert first.locator(".token").text_content() == model.tokenizer.decode([top]).replace(" ", "␣")
        assert page.locator("#tokens .tok").count() == len(ids)
        page.wait_for_selector("#lens .main-svg")
        assert page.get_attribute("#lens", "data-rows") == str(model.dims.n_layers)
        assert page.get_attribute("#lens", "data-cols") == str(len(ids))
        page.wait_for_selector("#attention[data-drawn='1'] .main-svg")
        assert page.get_attribute("#attention", "data-layer") == "0"
        page.select_option("#attn-head", "2")
        page.wait_for_selector("#attention[data-head='2'][data-drawn='1']")
        page.select_option("#attn-layer", "1")
        page.wait_for_selector("#attention[data-layer='1'][data-drawn='1']")
        links = page.locator("#features a.latent")
        assert links.count() >= len(ids)
        assert links.first.get_attribute("href").startswith("/feature?d=sae&i=")
        t.shot("explore")
    assert t.errors == []
    assert t.hosts <= {"127.0.0.1"}


def test_steering_page(browser, site):
    url, model, arts = site
    with tab(browser, url) as t:
        page = t.open("/steer")
        page.fill("#prompt", PROMPT)
        page.select_option("#what", "v:up")

        def run(scale: str) -> tuple[str, str]:
            page.fill("#scale", scale)
            page.click("#steer-run")
            page.wait_for_selector(f"#steer-result[data-scale='{scale}'] #steered .gen-text", state="attached")
            return page.text_content("#unsteered .gen-text"), page.text_content("#steered .gen-text")

        unsteered, at_zero = run("0")
        assert unsteered == at_zero == library_text(model)
        unsteered, steered = run("6")
        assert unsteered == library_text(model)
        assert steered == library_text(model, arts.vectors["up"].interventions(6.0)) != unsteered
        assert "mean" in page.text_content("#kl")
        assert page.locator("table.probes tbody tr").count() == 2
        _, negative = run("-6")
        assert negative == library_text(model, arts.vectors["up"].interventions(-6.0)) not in (steered, unsteered)
        # a dictionary latent steers too
        page.select_option("#what", "d:sae")
        page.fill("#latent", "5")
        _, feature = run("12")
        assert feature == library_text(model, from_dictionary(arts.dictionaries["sae"], 5).interventions(12.0))
        page.select_option("#what", "v:up")
        run("6")  # the screenshot shows the vector's generations
        t.shot("steer")
    assert t.errors == []
    assert t.hosts <= {"127.0.0.1"}
