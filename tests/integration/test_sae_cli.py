"""The three dictionary-learning subcommands end to end on a tiny model saved to disk:
harvest → train-sae → eval-sae, through ``interplab.cli.main`` exactly as a user types them."""

from __future__ import annotations

import json

import pytest
import torch

from interplab.cli.main import main
from interplab.dictionary import Dictionary, load_dictionary

from .test_harvest import save_tiny, write_corpus


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sae-cli")
    model = save_tiny(root / "model")
    corpus = write_corpus(root / "docs.txt", n_docs=120)
    return root, model, corpus


def _harvest(root, model, corpus, capsys, *extra):
    code = main(["harvest", "--model", model, "--corpus", corpus, "--sites", "L1.resid_post,L1.mlp_out",
                 "--n-tokens", "1200", "--ctx-len", "16", "--shard-tokens", "300", "--dtype", "float32",
                 "--out", str(root / "store"), *extra])
    return code, _flat(capsys.readouterr())


def _flat(captured):
    """Rich wraps lines at the terminal width; compare text with whitespace collapsed."""
    return type(captured)(" ".join(captured.out.split()), " ".join(captured.err.split()))


def test_harvest_train_eval(setup, capsys):
    root, model, corpus = setup
    code, out = _harvest(root, model, corpus, capsys)
    assert code == 0, out.err
    assert "1,200 tokens in 4 shards, complete" in out.out
    # Running the same command again finds the store complete and writes nothing.
    code, out = _harvest(root, model, corpus, capsys)
    assert code == 0 and "0 shards written, 4 already there" in out.out

    code = main(["train-sae", "--store", str(root / "store"), "--sites", "L1.resid_post",
                 "--expansions", "2,4", "--k", "4", "--batch-size", "64", "--steps", "30",
                 "--checkpoint-every", "10", "--out", str(root / "sae"), "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    dirs = sorted((root / "sae" / "dictionaries").glob("L1.resid_post.topk.*"))
    assert [d.name for d in dirs] == ["L1.resid_post.topk.128.k4", "L1.resid_post.topk.256.k4"]
    d = Dictionary.load(dirs[0])
    assert d.cfg.d_sae == 128 and d.cfg.k == 4
    run = next(p for p in (root / "sae").iterdir() if p.name.startswith("train-topk"))
    assert (run / "report.html").exists() and (run / "figures" / "training_fvu.png").exists()
    results = json.loads((run / "results.json").read_text())
    assert set(results["dictionaries"]) == {p.name for p in dirs}
    for name, entry in results["dictionaries"].items():
        assert 0.0 <= entry["metrics"]["fvu"] < 1.5, name

    code = main(["eval-sae", "--dictionary", str(dirs[1]), "--model", model, "--corpus", corpus,
                 "--store", str(root / "store"), "--n-contexts", "8", "--ctx-len", "16",
                 "--batch-size", "4", "--out", str(root / "runs")])
    out = _flat(capsys.readouterr())
    assert code == 0, out.err
    assert "loss_recovered" in out.out and "fvu" in out.out
    run = next((root / "runs").glob("eval-sae-*"))
    metrics = json.loads((run / "results.json").read_text())["metrics"]
    assert metrics["l0"] <= 4 + 1e-9
    expected = (metrics["ce_zero"] - metrics["ce_spliced"]) / (metrics["ce_zero"] - metrics["ce_clean"])
    assert metrics["loss_recovered"] == pytest.approx(expected, rel=1e-9)
    intervals = json.loads((run / "results.json").read_text())["intervals"]
    assert set(intervals) == {"ce_increase", "kl", "loss_recovered"}
    assert all(low <= high for low, high in intervals.values())
    assert intervals["kl"][0] <= metrics["kl"] <= intervals["kl"][1]
    assert (dirs[1] / "features" / "stats.safetensors").exists()
    # The features were saved next to the dictionary; the dictionary itself still loads.
    assert torch.equal(load_dictionary(dirs[1]).W_dec, Dictionary.load(dirs[1]).W_dec)


def test_train_resumes_after_a_finished_run_without_changes(setup, capsys):
    root, model, corpus = setup
    if not (root / "store").exists():
        assert _harvest(root, model, corpus, capsys)[0] == 0
    args = ["train-sae", "--store", str(root / "store"), "--sites", "L1.resid_post", "--expansions", "2",
            "--k", "4", "--batch-size", "64", "--steps", "12", "--checkpoint-every", "5",
            "--out", str(root / "sae2"), "--device", "cpu"]
    assert main(args) == 0
    path = next((root / "sae2" / "dictionaries").glob("L1.*"))
    before = Dictionary.load(path).W_enc.clone()
    assert main(args) == 0  # resume=True by default: nothing left to do, weights unchanged
    assert torch.equal(Dictionary.load(path).W_enc, before)
    capsys.readouterr()


def test_user_mistakes_are_clear_errors(setup, capsys, tmp_path):
    root, model, corpus = setup
    if not (root / "store").exists():
        assert _harvest(root, model, corpus, capsys)[0] == 0
    capsys.readouterr()
    # A site the store does not hold.
    assert main(["train-sae", "--store", str(root / "store"), "--sites", "L0.resid_post",
                 "--out", str(tmp_path / "x"), "--steps", "2"]) == 2
    assert "has no site ['L0.resid_post']" in _flat(capsys.readouterr()).err
    # k larger than the dictionary.
    assert main(["train-sae", "--store", str(root / "store"), "--sites", "L1.resid_post", "--expansions", "1",
                 "--k", "999", "--out", str(tmp_path / "y"), "--steps", "2"]) == 2
    assert "k=999 exceeds d_sae=64" in _flat(capsys.readouterr()).err
    # Resuming the store with another site list is refused, and the store is left as it was.
    before = json.loads((root / "store" / "manifest.json").read_text())
    assert main(["harvest", "--model", model, "--corpus", corpus, "--sites", "L0.resid_post",
                 "--n-tokens", "1200", "--ctx-len", "16", "--shard-tokens", "300", "--dtype", "float32",
                 "--out", str(root / "store")]) == 2
    assert "sites" in _flat(capsys.readouterr()).err
    assert json.loads((root / "store" / "manifest.json").read_text()) == before
    # A corpus with invalid UTF-8.
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text\n\n\xff\xfe broken")
    assert main(["harvest", "--model", model, "--corpus", str(bad), "--sites", "L1.resid_post",
                 "--out", str(tmp_path / "s")]) == 2
    assert "UTF-8" in _flat(capsys.readouterr()).err
    assert not (tmp_path / "s").exists()


def test_train_on_the_fly(setup, capsys):
    root, model, corpus = setup
    code = main(["train-sae", "--on-the-fly", "--model", model, "--corpus", corpus, "--sites", "L1.resid_post",
                 "--buffer-tokens", "256", "--expansions", "2", "--k", "4", "--batch-size", "64",
                 "--steps", "6", "--ctx-len", "16", "--out", str(root / "otf"), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    d = Dictionary.load(next((root / "otf" / "dictionaries").glob("L1.*")))
    assert d.cfg.d_sae == 128 and bool(torch.isfinite(d.W_dec).all())
    assert main(["train-sae", "--on-the-fly", "--out", str(root / "otf2")]) == 2
    assert "--on-the-fly needs --sites and --steps" in capsys.readouterr().err
