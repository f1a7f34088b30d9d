"""Resuming: the loss curve and weights after a crash + resume equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interplab.activations.source import TensorSource
from interplab.core.errors import ConfigError, InterplabError
from interplab.dictionary import DictionaryConfig
from interplab.dictionary.checkpoint import latest_checkpoint, load_checkpoint
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import train

SITE = "L1.resid_post"


pytestmark = pytest.mark.usefixtures("one_thread")


def source():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(24, 8, generator=g)
    x = (torch.rand(512, 24, generator=g) * (torch.rand(512, 24, generator=g) < 0.15)) @ basis + 0.5
    return TensorSource({SITE: x})


DICTS = [DictionaryConfig(arch="topk", d_in=8, d_sae=128, k=2, input_site=SITE, dead_after_tokens=64, aux_k=6),
         DictionaryConfig(arch="topk", d_in=8, d_sae=16, k=2, input_site=SITE)]


def cfg(out, **kw):
    base = dict(steps=24, batch_size=32, lr=4e-3, warmup_steps=3, decay="cosine", decay_start=0.5,
                log_every=2, checkpoint_every=5, init_tokens=96, grad_clip=1.0, out_dir=str(out))
    return TrainConfig(**{**base, **kw})


class Crash(Exception):
    pass


def crash_at(k):
    def hook(step):
        if step == k:
            raise Crash(step)
    return hook


def assert_same_run(a: Path, b: Path, names):
    for name in names:
        assert (a / name / "metrics.jsonl").read_text() == (b / name / "metrics.jsonl").read_text(), name
        wa, wb = load_file(str(a / name / "weights.safetensors")), load_file(str(b / name / "weights.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name


def test_crash_and_resume_is_bit_exact(tmp_path):
    ref = train(source(), DICTS, cfg(tmp_path / "ref"), progress=False)
    assert any(json.loads(line)["n_dead"] for line in
               (ref.paths[ref.names[0]] / "metrics.jsonl").read_text().splitlines())  # AuxK state matters
    with pytest.raises(Crash):  # checkpoint at 10, crash after 13: steps 11-13 are redone
        train(source(), DICTS, cfg(tmp_path / "run"), progress=False, on_step=crash_at(13))
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step-00000010" and load_checkpoint(ckpt).batches_consumed == 10
    res = train(source(), DICTS, cfg(tmp_path / "run", resume=True), progress=False)
    assert res.resumed_from == 10
    assert_same_run(tmp_path / "ref", tmp_path / "run", ref.names)
    # resuming a finished run changes nothing
    train(source(), DICTS, cfg(tmp_path / "run", resume=True, log_every=2), progress=False)
    assert_same_run(tmp_path / "ref", tmp_path / "run", ref.names)
    assert len(list((tmp_path / "run" / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints


def test_resume_with_other_settings_names_the_differences(tmp_path):
    with pytest.raises(Crash):
        train(source(), DICTS, cfg(tmp_path), progress=False, on_step=crash_at(6))
    other = [DICTS[0], DictionaryConfig(arch="topk", d_in=8, d_sae=16, k=3, input_site=SITE)]
    with pytest.raises(ConfigError, match="different setup .*dictionaries: checkpoint has"):
        train(source(), other, cfg(tmp_path, resume=True), progress=False)
    with pytest.raises(ConfigError, match=r"train.lr: 0.004 -> 0.001; train.seed: 0 -> 1"):
        train(source(), DICTS, cfg(tmp_path, resume=True, lr=1e-3, seed=1), progress=False)
    # bookkeeping fields may change
    train(source(), DICTS, cfg(tmp_path, resume=True, log_every=3, checkpoint_every=0), progress=False)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    with pytest.raises(Crash):
        train(source(), DICTS, cfg(tmp_path), progress=False, on_step=crash_at(6))
    state = latest_checkpoint(tmp_path) / "state.json"
    meta = json.loads(state.read_text())
    meta["dictionaries"][0]["arch"] = "batchtopk"
    state.write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"L1.resid_post.topk.128.k2.arch: 'batchtopk' -> 'topk'"):
        train(source(), DICTS, cfg(tmp_path, resume=True), progress=False)
    meta["dictionaries"][0]["arch"] = "topk"
    state.write_text(json.dumps(meta))
    from safetensors.torch import save_file
    weights = latest_checkpoint(tmp_path) / "dictionaries.safetensors"
    w = load_file(str(weights))
    w["0/threshold"] = torch.zeros(())
    save_file(w, str(weights))
    with pytest.raises(InterplabError, match="does not hold a 'topk' dictionary's state"):
        train(source(), DICTS, cfg(tmp_path, resume=True), progress=False)


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from unit.test_trainer_resume import DICTS, cfg, source
    from interplab.dictionary.trainer import train
    from pathlib import Path

    def hook(step):
        if step == 8:  # past the checkpoint at 5: the kill lands mid-way between checkpoints
            Path({marker!r}).write_text("8")
            time.sleep(60)

    train(source(), DICTS, cfg({out!r}), progress=False, on_step=hook)
""")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    marker = tmp_path / "marker"
    script = SCRIPT.format(tests=str(Path(__file__).parents[1]), marker=str(marker), out=str(tmp_path / "run"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "training subprocess exited early"
            assert time.monotonic() < deadline, "training subprocess too slow"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert latest_checkpoint(tmp_path / "run").name == "step-00000005"
    res = train(source(), DICTS, cfg(tmp_path / "run", resume=True), progress=False)
    ref = train(source(), DICTS, cfg(tmp_path / "ref"), progress=False)
    assert res.resumed_from == 5
    assert_same_run(tmp_path / "ref", tmp_path / "run", ref.names)
