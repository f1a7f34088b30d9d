"""``interplab steer`` and ``interplab generate --steer`` end to end on a tiny model saved to
disk: the run record holds the sweep, the vector artifact reloads, generation with the vector
at scale 0 equals plain generation and a large scale changes it; bad input is a clear error."""

from __future__ import annotations

import json

import torch

from interplab.analyses.generate_run import GenerateConfig, generate_run
from interplab.analyses.steering import SteeringVector
from interplab.cli.main import main

from .test_harvest import save_tiny


def test_steer_and_generate(tmp_path, capsys):
    model = save_tiny(tmp_path / "model")
    code = main(["steer", "--model", model, "--dataset", "sentiment", "--n", "48", "--site", "L0.resid_post",
                 "--probe-site", "L1.resid_post", "--max-new-tokens", "3", "--prompts", "the cat,a dog,my day",
                 "--out", str(tmp_path / "runs")])
    assert code == 0, capsys.readouterr().err
    run = next((tmp_path / "runs").glob("steer-sentiment-diff_means-*"))
    results = json.loads((run / "results.json").read_text())
    assert results["slope"]["low"] <= results["slope"]["estimate"] <= results["slope"]["high"]
    vector = SteeringVector.load(run / "vector")
    assert [str(s) for s in vector.sites] == ["L0.resid_post"]
    capsys.readouterr()

    plain = generate_run(GenerateConfig(prompt="the cat", model=model, max_new_tokens=4))
    zero = generate_run(GenerateConfig(prompt="the cat", model=model, steer=str(run / "vector"), scale=0.0,
                                       max_new_tokens=4))
    assert zero["steered"] == zero["plain"] == plain["plain"]
    big = generate_run(GenerateConfig(prompt="the cat", model=model, steer=str(run / "vector"), scale=1e4,
                                      max_new_tokens=4))
    assert big["steered"] != big["plain"]
    assert main(["generate", "--model", model, "--prompt", "the cat", "--steer", str(run / "vector"),
                 "--max-new-tokens", "2"]) == 0
    assert "steered (scale 4)" in capsys.readouterr().out


def test_steer_errors(tmp_path, capsys):
    model = save_tiny(tmp_path / "model")
    assert main(["steer", "--model", model, "--site", "L7.resid_post", "--probe-site", "L1.resid_post",
                 "--n", "48", "--out", str(tmp_path)]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["steer", "--model", model, "--method", "magic", "--out", str(tmp_path)]) == 2
    assert "method='magic' is not one of" in capsys.readouterr().err
    # A vector of another width is refused before generating.
    SteeringVector({"L0.resid_post": torch.ones(3)}).save(tmp_path / "v3")
    assert main(["generate", "--model", model, "--steer", str(tmp_path / "v3")]) == 2
    assert "vector has width 3" in capsys.readouterr().err
