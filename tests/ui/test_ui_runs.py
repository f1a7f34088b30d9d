"""The UI over real run records of every analysis, in headless Chromium: every page type loads
with zero console errors and no request leaves loopback; a heatmap has as many cells as the
result and hovering a cell shows its CI (and p, q where the result has them); the numbers shown
are the record's; bad records are shown as such without breaking the index; screenshots of every
page type are written."""

from __future__ import annotations

import json
import math

import pytest

from interplab.runs.runner import load_run
from interplab.ui.app import create_ui_app
from interplab.ui.assets import EXTERNAL
from interplab.ui.blocks_json import blocks_json
from interplab.ui.features import Features
from tests.integration.serving import live
from tests.integration.test_analyses_conformance import REGISTRY, world  # noqa: F401 (fixture)

from .browser import tab
from .records import make_runs


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("ui-runs")
    ids = make_runs(world, root)
    return root, ids


@pytest.fixture(scope="module")
def site(runs):
    root, ids = runs
    app = create_ui_app(root, features=Features.discover(root))
    with live(app) as url:
        yield url, root, ids


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def test_every_analysis_has_a_run_record_in_the_index(site):
    import httpx

    url, root, ids = site
    data = httpx.get(f"{url}/api/runs", params={"limit": 1000}).json()
    assert {r["id"] for r in data["runs"]} >= set(ids.values())
    assert all(r["status"] == "ok" for r in data["runs"])
    by_id = {r["id"]: r for r in data["runs"]}
    for name, rid in ids.items():
        assert by_id[rid]["analysis"] == name
        record = json.loads((root / rid / "results.json").read_text())
        for key, value in record["headline"].items():  # the index's headline numbers are the record's
            shown = by_id[rid]["headline"][key]
            assert shown == value or (isinstance(value, float) and close(shown, value)), (name, key)


@pytest.mark.parametrize("name", REGISTRY.names())
def test_the_run_api_gives_the_records_numbers(name, site):
    import httpx

    url, root, ids = site
    response = httpx.get(f"{url}/api/run", params={"id": ids[name]}, timeout=60)
    assert not EXTERNAL.search(response.content)  # no served byte names an external address
    view = response.json()
    assert view["status"] == "ok" and view["analysis"] == name
    loaded = load_run(root / ids[name])  # read back independently of the UI's cache
    assert view["blocks"] == json.loads(json.dumps(blocks_json(loaded.result.blocks())))
    assert view["config"] == {**json.loads((root / ids[name] / "config.json").read_text())}
    record = json.loads((root / ids[name] / "results.json").read_text())
    assert set(view["headline"]) == set(record["headline"])


def _heatmaps(view) -> list[dict]:
    return [b for b in view["blocks"] if b["type"] == "heatmap"]


PLOTTED = """() => [...document.querySelectorAll('.figure[data-block=heatmap]')].map(box => ({
    cells: Number(box.dataset.cells), z: box.querySelector('.plot').data[0].z}))"""


def test_every_page_type_loads_with_no_console_error_and_shows_the_records_numbers(browser, site):
    import httpx

    url, root, ids = site
    with tab(browser, url) as t:
        page = t.open("/")
        assert page.locator("#runs-table tbody tr").count() == len(ids)
        t.shot("index")
        for name, rid in ids.items():
            view = httpx.get(f"{url}/api/run", params={"id": rid}, timeout=60).json()
            page = t.open(f"/run?id={rid}")
            assert page.locator("h1").inner_text() == view["title"]
            # every figure block is drawn, with Plotly, and heatmaps have one cell per result cell
            figures = [b for b in view["blocks"] if b["type"] in ("heatmap", "lines", "bars", "scatter", "graph")]
            assert page.locator(".figure .plot.js-plotly-plot").count() == len(figures), name
            plotted = page.evaluate(PLOTTED)
            for block, shown in zip(_heatmaps(view), plotted, strict=True):
                rows, cols = len(block["values"]), len(block["values"][0])
                assert shown["cells"] == rows * cols == sum(len(r) for r in shown["z"])
                assert shown["z"] == block["values"]
            # the headline table shows the record's numbers (to the 4 significant digits shown)
            record = json.loads((root / rid / "results.json").read_text())["headline"]
            for row in page.locator("table.headline tbody tr").all():
                key, text = (c.inner_text() for c in row.locator("td").all())
                value = record[key]
                if isinstance(value, float) and math.isfinite(value):
                    assert math.isclose(float(text), value, rel_tol=1e-3, abs_tol=1e-12), (name, key, text)
            t.shot(f"run-{name}")
        a, b = ids["patch"], ids["demo"]
        page = t.open(f"/compare?a={a}&b={b}")
        assert page.locator("table.compare").count() == 2
        t.shot("compare")
        page = t.open("/features")
        t.shot("features")
        assert t.errors == []
        assert t.hosts == {"127.0.0.1"}


def test_hovering_a_heatmap_cell_shows_its_mean_and_ci(browser, site):
    import httpx

    url, _root, ids = site
    view = httpx.get(f"{url}/api/run", params={"id": ids["patch"]}, timeout=60).json()
    block = _heatmaps(view)[0]
    rows, cols = len(block["values"]), len(block["values"][0])
    i, j = rows - 1, cols - 1
    with tab(browser, url) as t:
        page = t.open(f"/run?id={ids['patch']}")
        plot = page.locator(".figure[data-block=heatmap] .plot").first
        plot.scroll_into_view_if_needed()
        x, y = page.evaluate("""([i, j]) => {
            const gd = document.querySelector('.figure[data-block=heatmap] .plot');
            const L = gd._fullLayout, box = gd.getBoundingClientRect();
            return [box.left + L._size.l + L.xaxis.l2p(j), box.top + L._size.t + L.yaxis.l2p(i)];
        }""", [i, j])
        page.mouse.move(x, y)
        hover = page.locator(".hoverlayer .hovertext").first
        hover.wait_for(timeout=10_000)
        text = hover.text_content()
        t.shot("run-patch-hover")
        assert t.errors == []
    mean = block["values"][i][j]
    assert f"mean {mean:.4f}" in text
    low = block["low"][i][j] if block.get("low") else mean - block["halfwidth"][i][j]
    high = block["high"][i][j] if block.get("high") else mean + block["halfwidth"][i][j]
    assert f"95% CI [{low:.4f}, {high:.4f}]" in text
    if block.get("p"):
        assert "p " in text and "q " in text


# -- feature dashboards (the eval-sae run's dictionary) -----------------------------------------------
def _dictionary(url):
    import httpx

    (d,) = httpx.get(f"{url}/api/features").json()["dictionaries"]
    return d


def test_the_eval_sae_runs_dictionary_has_dashboards_equal_to_its_statistics(site):
    import httpx

    from interplab.dictionary.features import FeatureStats

    url, _root, _ids = site
    d = _dictionary(url)
    stats = FeatureStats.load(d["path"])
    page = httpx.get(f"{url}/api/latents", params={"d": d["id"], "limit": 500}).json()
    assert page["total"] == stats.d_sae == len(page["latents"])
    densities = [x["density"] for x in page["latents"]]
    assert densities == sorted(densities, reverse=True)
    i = page["latents"][0]["index"]
    response = httpx.get(f"{url}/api/feature", params={"d": d["id"], "i": i})
    assert not EXTERNAL.search(response.content)
    f = response.json()
    assert f["density"] == float(stats.density[i])
    assert f["histogram"]["counts"] == stats.hist_counts[i].tolist()
    for j, c in enumerate(f["top_contexts"]):
        assert c["context"] == int(stats.top_contexts[i, j])
        assert c["acts"] == stats.window_acts[i, j].double().tolist()
        assert c["tokens"] == [stats.token_str(t) for t in stats.window_tokens[i, j].tolist()]
        assert c["max_index"] == int(stats.top_positions[i, j] - stats.window_start[i, j])
    assert [n["index"] for n in f["neighbours"]] == stats.neighbour_ids[i].tolist()
    sampled = [c["context"] for q in f["quantiles"] for c in q["contexts"]]
    assert sorted(sampled) == sorted(int(c) for c in stats.quantile_contexts[i].flatten() if c >= 0)
    # search by the text of the latent's strongest token finds it
    word = f["top_contexts"][0]["tokens"][f["top_contexts"][0]["max_index"]].strip()
    if word:
        found = httpx.get(f"{url}/api/latents", params={"d": d["id"], "q": word, "limit": 500}).json()
        assert i in [x["index"] for x in found["latents"]]
    assert httpx.get(f"{url}/api/feature", params={"d": d["id"], "i": stats.d_sae}).status_code == 404
    assert httpx.get(f"{url}/api/feature", params={"d": "../etc", "i": 0}).status_code == 404


def test_the_neuronpedia_export_is_a_zip_of_every_latent(site):
    import io
    import zipfile

    import httpx

    url, _root, _ids = site
    d = _dictionary(url)
    r = httpx.get(f"{url}/api/export", params={"d": d["id"]}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        features = [f for name in z.namelist() for f in json.loads(z.read(name))["features"]]
    page = httpx.get(f"{url}/api/latents", params={"d": d["id"], "limit": 1}).json()
    assert sorted(f["feature_index"] for f in features) == list(range(page["d_sae"]))


def test_the_feature_page_highlights_the_firing_tokens(browser, site):
    import httpx

    url, _root, _ids = site
    d = _dictionary(url)
    i = httpx.get(f"{url}/api/latents", params={"d": d["id"]}).json()["latents"][0]["index"]
    f = httpx.get(f"{url}/api/feature", params={"d": d["id"], "i": i}).json()
    contexts = f["top_contexts"] + [c for q in reversed(f["quantiles"]) for c in q["contexts"]]  # highest first, as shown
    with tab(browser, url) as t:
        page = t.open(f"/features?d={d['id']}")
        assert page.locator("table.latent-table tbody tr").count() == min(50, f["d_sae"])
        t.shot("features-list")
        page = t.open(f"/feature?d={d['id']}&i={i}")
        shown = page.evaluate("""() => [...document.querySelectorAll('.tokens.context')].map(line =>
            [...line.querySelectorAll('span.tok')].map(s => [s.className, s.textContent]))""")
        assert len(shown) == len(contexts) > 0
        for line, c in zip(shown, contexts):
            firing = [j for j, a in enumerate(c["acts"]) if a and a > 0]
            assert [j for j, (cls, _) in enumerate(line) if "firing" in cls.split()] == firing
            cls, text = line[c["max_index"]]
            assert "max" in cls.split() and text == c["tokens"][c["max_index"]]
        t.shot("feature")
        assert t.errors == [] and t.hosts == {"127.0.0.1"}
