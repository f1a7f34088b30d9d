"""A circuit graph in the browser: a bench record whose row kept its edge scores draws every node,
the edges at or above the threshold, and the slider shows more edges as it goes down; hovering
an edge's midpoint shows its score, CI and whether the planted circuit has it."""

from __future__ import annotations

import dataclasses

import pytest

from interplab.groundtruth.bench_circuits import CircuitEdges
from interplab.groundtruth.bench_run import BenchResult, BenchRunConfig
from interplab.groundtruth.bench_suites import Row
from interplab.runs.record import RunRecord
from interplab.runs.runner import write_result
from interplab.ui.app import create_ui_app
from interplab.ui.features import Features
from tests.integration.serving import live

from .browser import tab

NODES = ["embed", "L0.h0", "L0.h1", "L1.h0", "logits"]
LAYERS = [-1.0, 0.0, 0.0, 1.0, 2.0]
EDGES = [["embed", "L0.h0"], ["embed", "L0.h1"], ["L0.h0", "L1.h0", "k"], ["L0.h1", "L1.h0", "q"],
         ["L1.h0", "logits"], ["embed", "logits"]]
SCORES = [0.9, 0.05, 0.7, -0.3, 1.2, 0.01]
TRUTH = [True, False, True, False, True, False]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-graph")
    circuit = CircuitEdges(NODES, LAYERS, EDGES, SCORES, [s - 0.1 for s in SCORES], [s + 0.1 for s in SCORES],
                           TRUTH, threshold=0.12, metric="logit difference")
    result = BenchResult([Row("circuits", "planted induction", "exact edge patching", "edge AUROC", 1.0,
                              low=1.0, high=1.0, null=0.6, extra={"circuit": circuit})], quick=True, n_seeds=2)
    config = BenchRunConfig(quick=True, out=str(root))
    with RunRecord(root, "bench-graph", {"analysis": "bench", **dataclasses.asdict(config)}) as run:
        write_result(run, "bench", result)
    with live(create_ui_app(root, features=Features.of([]))) as url:
        yield url, run.final.name


def test_the_circuit_graph_draws_its_edges_and_the_slider_filters_them(browser, site):
    url, rid = site
    with tab(browser, url) as t:
        page = t.open(f"/run?id={rid}")
        box = page.locator(".figure[data-block=graph]")
        assert box.count() == 1
        above = sum(abs(s) >= 0.12 for s in SCORES)
        assert box.get_attribute("data-edges") == str(above) == "4"
        assert f"{above} of {len(SCORES)} edges shown" in box.locator(".edge-count").inner_text()
        nodes = page.evaluate("() => document.querySelector('.figure[data-block=graph] .plot').data.at(-1).text")
        assert nodes == NODES
        t.shot("run-bench-graph")
        box.locator("input.threshold").fill("0")  # every edge
        assert box.get_attribute("data-edges") == str(len(SCORES))
        box.locator("input.threshold").fill("1")
        assert box.get_attribute("data-edges") == "1"  # only L1.h0 → logits (1.2)
        # hover the one edge left: its label, score, CI and truth
        x, y = page.evaluate("""() => {
            const gd = document.querySelector('.figure[data-block=graph] .plot');
            const mids = gd.data.at(-2), L = gd._fullLayout, box = gd.getBoundingClientRect();
            return [box.left + L._size.l + L.xaxis.l2p(mids.x[0]), box.top + L._size.t + L.yaxis.l2p(mids.y[0])];
        }""")
        page.mouse.move(x, y)
        hover = page.locator(".hoverlayer .hovertext").first
        hover.wait_for(timeout=10_000)
        text = hover.text_content()
        assert "L1.h0 → logits" in text and "1.2" in text and "95% CI [1.100, 1.300]" in text
        assert "in the true circuit: yes" in text
        assert t.errors == [] and t.hosts == {"127.0.0.1"}
