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
    view = httpx.get(f"{url}/api/run", params={"id": ids[name]}, timeout=60).json()
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
        text = hover.inner_text()
        t.shot("run-patch-hover")
        assert t.errors == []
    mean = block["values"][i][j]
    assert f"mean {mean:.4f}" in text
    low = block["low"][i][j] if block.get("low") else mean - block["halfwidth"][i][j]
    high = block["high"][i][j] if block.get("high") else mean + block["halfwidth"][i][j]
    assert f"95% CI [{low:.4f}, {high:.4f}]" in text
    if block.get("p"):
        assert "p " in text and "q " in text
