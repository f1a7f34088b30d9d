"""Bad inputs a new user types are one clear error before any work (issue: nothing silently
wrong): config-file syntax with line and column, values of the wrong type, devices this machine
lacks, sizes beyond the model (top-k, prompt length), absurd counts, and negative numbers in
list options — each through the real CLI, leaving no run directory behind."""

from __future__ import annotations

import pytest

from interplab.cli.main import main


def _fails(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(("text", "needles"), [
    ("analysis: patch\nn: [1,\n", ("config.yaml:3:1", "not valid YAML")),
    ("analysis: patch\nn: eight\n", ("n must be an integer, got 'eight'",)),
    ("analysis: train-sae\nlr: fast\n", ("lr must be a number, got 'fast'",)),
    ("analysis: patch\nn_resamples: .nan\n", ("n_resamples must be an integer",)),
    ("analysis: steer\nscales: .inf\n", ("scales must be a finite number",)),
    ("analysis: lens\n", ("lacks the required field 'prompt'",)),
    ("analysis: pach\n", ("Unknown analysis 'pach'. Did you mean 'patch'?",)),
])
def test_config_file_mistakes(tmp_path, capsys, text, needles):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    _fails(["run", str(path)], capsys, *needles)


def test_values_are_checked_before_the_model_is_touched(tmp_path, capsys):
    out = tmp_path / "runs"
    for argv, needle in ((["patch", "--n-resamples", "0"], "n_resamples must be >= 2, got 0"),
                         (["patch", "--n", "1000000"], "n must be <= 10000, got 1000000"),
                         (["heads", "--device", "cuda:3"], "device='cuda:3' but this machine has"),
                         (["patch", "--dtype", "float8"], "dtype='float8' is not one of")):
        _fails([*argv, "--model", "/nonexistent", "--out", str(out)], capsys, needle)
    assert not out.exists()


def test_sizes_beyond_the_model(tiny_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    _fails(["lens", "abc", "--model", tiny_dir, "--top-k", "1000", "--out", str(out)], capsys,
           "top_k=1000 exceeds the vocabulary (32 tokens)")
    _fails(["lens", "ab" * 40, "--model", tiny_dir, "--out", str(out)], capsys,
           "A prompt of 80 tokens exceeds the model's 64 positions")
    _fails(["generate", "--prompt", "abc", "--model", tiny_dir, "--max-new-tokens", "100", "--out", str(out)], capsys,
           "plus 100 new tokens exceeds the model's 64 positions")
    assert not out.exists()


def test_negative_numbers_in_list_options(tiny_dir, tmp_path, capsys):
    # parsed as the list (-1, 0, 1); the error that follows is about the tiny model's sites
    _fails(["steer", "--model", tiny_dir, "--scales", "-1,0,1", "--site", "L9.resid_post", "--out", str(tmp_path)],
           capsys, "L9")
