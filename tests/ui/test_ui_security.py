"""The UI's refusals and guarantees that need no model: path traversal outside RUNS_DIR is
refused, the token gate holds for browsers (cookie via ?token=) and clients (bearer), off
loopback without a token the command refuses to start, no served byte names an external address,
and `interplab ui` prints a working URL within seconds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

from interplab.core.errors import ConfigError
from interplab.ui.app import create_ui_app
from interplab.ui.assets import EXTERNAL, assets
from interplab.ui.features import Features
from tests.integration.serving import live

TOKEN = "ui-s3cret"


def fake_runs(root):
    """Records the index must list without reading them back: complete-looking, incomplete, corrupt."""
    good = root / "lens-20260101-000000"
    good.mkdir(parents=True)
    (good / "config.json").write_text(json.dumps({"analysis": "lens", "model": "m", "prompt": "x"}))
    (good / "results.json").write_text(json.dumps({"analysis": "lens", "headline": {"top": "x", "p": 0.5}}))
    (good / "provenance.json").write_text(json.dumps({"started": "2026-01-01T00:00:00", "ended": "2026-01-01T00:00:01"}))
    half = root / "nested" / "patch-20260102-000000"
    half.mkdir(parents=True)
    (half / "config.json").write_text(json.dumps({"analysis": "patch"}))
    bad = root / "demo-20260103-000000"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    (root / ".incomplete-x-1@host").mkdir()
    (root / ".incomplete-x-1@host" / "config.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("ui-sec")
    root = fake_runs(base / "runs")
    (base / "secret").mkdir()
    (base / "secret" / "config.json").write_text(json.dumps({"analysis": "lens", "secret": "leak"}))
    os.symlink(base / "secret", root / "escape")
    with live(create_ui_app(root, features=Features.of([]))) as url:
        yield url, root


def test_the_index_lists_every_record_with_its_status_and_hides_incomplete_writes(site):
    url, _ = site
    runs = {r["id"]: r for r in httpx.get(f"{url}/api/runs").json()["runs"]}
    assert runs["lens-20260101-000000"]["status"] == "ok"
    assert runs["lens-20260101-000000"]["headline"] == {"top": "x", "p": 0.5}
    assert runs["nested/patch-20260102-000000"]["status"] == "incomplete"
    assert "results.json" in runs["nested/patch-20260102-000000"]["problem"]
    assert runs["demo-20260103-000000"]["status"] == "corrupt"
    assert not any(k.startswith(".incomplete") for k in runs)


@pytest.mark.parametrize("rid", ["../secret", "escape", "/etc", "nested/../../secret", "..", ".", "",
                                 "lens-20260101-000000/../../secret", "%2e%2e/secret", "nested\\..\\..\\secret"])
def test_a_run_id_outside_the_runs_directory_is_refused(site, rid):
    url, _ = site
    r = httpx.get(f"{url}/api/run", params={"id": rid})
    assert r.status_code in (404, 422), r.text
    assert "leak" not in r.text


@pytest.mark.parametrize("path", ["/static/../../../etc/passwd", "/static/..%2F..%2Fapp.py", "/static/app.py",
                                  "/static/%2e%2e%2fsettings.py"])
def test_static_files_are_an_allow_list(site, path):
    url, _ = site
    r = httpx.get(url + path)
    assert r.status_code == 404


def test_unknown_sort_is_a_400_naming_it(site):
    url, _ = site
    r = httpx.get(f"{url}/api/runs", params={"sort": "rm -rf"})
    assert r.status_code == 400 and "sort must be one of" in r.json()["error"]["message"]
    r = httpx.get(f"{url}/api/runs", params={"offset": -1})
    assert r.status_code == 422 and r.json()["error"]["param"] == "offset"


def test_no_served_byte_names_an_external_address(site):
    url, _ = site
    pages = ["/", "/run?id=lens-20260101-000000", "/compare?a=x&b=y", "/features", "/feature?d=x&i=0", "/explore", "/steer"]
    bodies = [httpx.get(url + p).content for p in pages]
    bodies += [httpx.get(f"{url}/static/{name}").content for name in assets()]
    bodies += [httpx.get(f"{url}/api/runs").content, httpx.get(f"{url}/api/run", params={"id": "lens-20260101-000000"}).content]
    assert len(bodies) > 10
    for body in bodies:
        assert not EXTERNAL.search(body), EXTERNAL.search(body)
    # the pattern itself: it finds addresses, and leaves only XML namespace identifiers
    assert EXTERNAL.search(b'"https://cdn.plot.ly/x"') and EXTERNAL.search(b"http://example.com")
    assert not EXTERNAL.search(b"http://www.w3.org/2000/svg")
    plotly = httpx.get(f"{url}/static/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000 and b"blocked:" in plotly.content


def test_the_token_gate(tmp_path):
    from interplab.ui.settings import UiSettings

    root = fake_runs(tmp_path / "runs")
    with live(create_ui_app(root, UiSettings(token=TOKEN), features=Features.of([]))) as url:
        assert httpx.get(f"{url}/").status_code == 401
        assert httpx.get(f"{url}/api/runs").status_code == 401
        assert httpx.get(f"{url}/static/ui.css").status_code == 401
        assert httpx.get(f"{url}/api/runs", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(f"{url}/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        first = httpx.get(f"{url}/run?id=x&token={TOKEN}")
        assert first.status_code == 303 and first.headers["location"] == "/run?id=x"
        assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
        with httpx.Client(base_url=url, follow_redirects=True) as browser_like:
            assert browser_like.get(f"/?token={TOKEN}").status_code == 200  # the cookie now lets it in
            assert browser_like.get("/api/runs").status_code == 200
        assert httpx.get(f"{url}/?token=wrong").status_code == 401


def test_off_loopback_without_a_token_is_refused_before_anything_loads():
    from interplab.cli.main import main

    env_token = os.environ.pop("INTERPLAB_TOKEN", None)
    try:
        assert main(["ui", "--host", "0.0.0.0", "--no-live"]) == 2
    finally:
        if env_token is not None:
            os.environ["INTERPLAB_TOKEN"] = env_token
    from interplab.serve.security import check_bind

    with pytest.raises(ConfigError, match="without an access token"):
        check_bind("0.0.0.0", None)


def _start(args, cwd):
    proc = subprocess.Popen([sys.executable, "-m", "interplab.cli.main", "ui", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "INTERPLAB_TOKEN": ""})
    started = time.monotonic()
    line = proc.stdout.readline()
    return proc, line, time.monotonic() - started


@pytest.mark.parametrize("target", ["runs", "runs/lens-20260101-000000"])
def test_the_command_prints_a_working_url_within_seconds(tmp_path, target):
    fake_runs(tmp_path / "runs")
    proc, line, seconds = _start([target, "--port", "0", "--no-live"], tmp_path)
    try:
        match = re.search(r"(http://127\.0\.0\.1:\d+)(\S*)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        assert seconds < 15
        r = httpx.get(match.group(1) + match.group(2), timeout=10)
        assert r.status_code == 200 and b"<main>" in r.content
        if target.endswith("000000"):
            assert match.group(2) == "/run?id=lens-20260101-000000"
        else:  # the index, and the latest complete run on the next line
            assert match.group(2) == "/"
            latest = proc.stdout.readline()
            assert latest.startswith("latest run (lens, lens-20260101-000000): http://127.0.0.1:")
        assert httpx.get(match.group(1) + "/api/runs").json()["total"] == 3
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reads and closes both pipes


def test_dictionaries_without_statistics_are_skipped_and_a_missing_one_is_an_error(tmp_path, caplog):
    (tmp_path / "sae").mkdir()  # a dictionary eval-sae has not been run on
    features = Features.discover(tmp_path / "runs", [str(tmp_path / "sae")])
    assert features.listing() == []
    assert "eval-sae --dictionary" in caplog.text
    with pytest.raises(ConfigError, match="no such directory"):
        Features.discover(tmp_path / "runs", [str(tmp_path / "nope")])


def test_corrupt_feature_statistics_are_a_clear_error_and_the_rest_still_works(tmp_path):
    stats = tmp_path / "sae" / "features"
    stats.mkdir(parents=True)
    (stats / "config.json").write_text(json.dumps({"format": "interplab-feature-stats/1", "config": {},
                                                   "input_site": "L0.resid_post", "target_site": "L0.resid_post",
                                                   "n_contexts": 1, "n_tokens": 1}))
    (stats / "stats.safetensors").write_bytes(b"\x00garbage")
    root = fake_runs(tmp_path / "runs")
    with live(create_ui_app(root, features=Features.discover(root, [str(tmp_path / "sae")]))) as url:
        (d,) = httpx.get(f"{url}/api/features").json()["dictionaries"]
        r = httpx.get(f"{url}/api/feature", params={"d": d["id"], "i": 0})
        assert r.status_code == 400 and "do not load" in r.json()["error"]["message"]
        assert httpx.get(f"{url}/api/runs").json()["total"] == 3


def test_explain_labels_show_on_the_feature_pages(tmp_path):
    from benchmarks.ui import synthetic_stats

    synthetic_stats(64).save(tmp_path / "sae" / "features")
    labels = tmp_path / "sae" / "labels"
    labels.mkdir()
    score = {"balanced_accuracy": 0.9, "ba_low": 0.8, "ba_high": 0.95}
    (labels / "labels.json").write_text(json.dumps({"latents": [
        {"latent": 3, "label": 'fires on the tokens [" tok7"]',
         "scores": {"detection": {"score": score, "shuffled": {"balanced_accuracy": 0.5}}}},
        {"latent": 4, "label": None, "error": "endpoint down"}]}))
    root = fake_runs(tmp_path / "runs")
    with live(create_ui_app(root, features=Features.discover(root, [str(tmp_path / "sae")]))) as url:
        (d,) = httpx.get(f"{url}/api/features").json()["dictionaries"]
        f = httpx.get(f"{url}/api/feature", params={"d": d["id"], "i": 3}).json()
        assert f["label"]["label"] == 'fires on the tokens [" tok7"]'
        assert f["label"]["scores"]["detection"] == {"balanced_accuracy": 0.9, "low": 0.8, "high": 0.95, "shuffled": 0.5}
        assert httpx.get(f"{url}/api/feature", params={"d": d["id"], "i": 4}).json()["label"] is None
        rows = httpx.get(f"{url}/api/latents", params={"d": d["id"], "sort": "index", "order": "asc"}).json()["latents"]
        assert rows[3]["label"] == 'fires on the tokens [" tok7"]' and rows[4]["label"] is None
