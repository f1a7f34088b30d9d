"""Disk full and concurrency: a full disk is the promised message whichever error type reports
it (safetensors raises its own ``SafetensorError``, not ``OSError``) and leaves data resumable;
a second writer into a store or a training run is refused with a lock; a rejected command
leaves nothing that blocks the corrected one; hidden temp directories of dead processes are
cleaned up, those of live ones never."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import SafetensorError

from interplab.activations import ActivationStore, StoreError, harvest
from interplab.activations import shards as st
from interplab.cli.main import main
from interplab.core import locks
from interplab.core.artifacts import ArtifactError
from interplab.core.errors import InputError
from interplab.core.locks import LockedError, remove_stale_temps, write_lock
from interplab.dictionary import DICTIONARIES, DictionaryConfig
from interplab.runs import record
from interplab.runs.record import RunRecord, list_runs

from .test_harvest import config

ENOSPC_SAFETENSORS = "Error while serializing: I/O error: No space left on device (os error 28)"


# -- disk full ---------------------------------------------------------------------------------
@pytest.mark.parametrize("error", [SafetensorError(ENOSPC_SAFETENSORS), OSError(errno.ENOSPC, "No space left")],
                         ids=["SafetensorError", "OSError"])
def test_disk_full_in_a_shard_is_the_message_and_resumes(tiny, corpus, tmp_path, monkeypatch, error):
    clean = harvest(tiny, config(tmp_path / "clean", corpus), progress=False)
    real, calls = st._save, []

    def fills_up(tensors, path):
        calls.append(path)
        if len(calls) == 8:  # 3 files per shard: inside the third shard
            path.write_bytes(b"half")
            raise error
        real(tensors, path)

    monkeypatch.setattr(st, "_save", fills_up)
    out = tmp_path / "s"
    with pytest.raises(StoreError, match=r"Disk full while writing shard-00002 of .*: 120 of 200 tokens are "
                                         r"safely stored in 2 complete shards .*re-run the same command"):
        harvest(tiny, config(out, corpus), progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000", "shard-00001"]
    monkeypatch.setattr(st, "_save", real)
    again = harvest(tiny, config(out, corpus), progress=False)
    assert again.complete and again.content_hash == clean.content_hash


def test_disk_full_writing_the_manifest_is_the_message_and_resumes(tiny, corpus, tmp_path, monkeypatch):
    real, calls = st.write_manifest, []

    def fills_up(*args):
        calls.append(1)
        if len(calls) == 3:  # the manifest update after the second shard
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args)

    monkeypatch.setattr(st, "write_manifest", fills_up)
    with pytest.raises(StoreError, match=r"Disk full while writing into .*: 120 of 200 tokens are safely stored"):
        harvest(tiny, config(tmp_path / "s", corpus), progress=False)
    monkeypatch.setattr(st, "write_manifest", real)
    assert harvest(tiny, config(tmp_path / "s", corpus), progress=False).complete


def test_disk_full_saving_a_dictionary_or_a_run_record(tmp_path, monkeypatch):
    import safetensors.torch

    def full(*args, **kw):
        raise SafetensorError(ENOSPC_SAFETENSORS)

    d = DICTIONARIES.get("topk")(DictionaryConfig(arch="topk", d_in=4, d_sae=8, k=2))
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(ArtifactError, match=r"Disk full while writing .*d: nothing was written"):
        d.save(tmp_path / "d")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(record, "save_file", full)
    with pytest.raises(ArtifactError, match="Disk full while writing the run record"), \
            RunRecord(tmp_path / "runs", "demo", {}) as run:
        run.add_tensors("x", {"y": torch.zeros(2)})
    assert not (tmp_path / "runs").exists()


# -- one writer at a time ----------------------------------------------------------------------
@pytest.fixture
def holder(tmp_path):
    """Start a process holding the write lock of a directory; yields (start, process)."""
    procs = []

    def start(directory) -> subprocess.Popen:
        code = textwrap.dedent(f"""
            import time
            from interplab.core.locks import write_lock
            with write_lock({str(directory)!r}, "test"):
                print("held", flush=True)
                time.sleep(120)
        """)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        p.stdout.close()


def test_a_second_writer_into_a_store_is_refused_until_the_first_dies(tiny, corpus, tmp_path, holder):
    out = tmp_path / "s"
    first = holder(out)
    with pytest.raises(LockedError, match=rf"activation store .*s is being written by process {first.pid} on host"):
        harvest(tiny, config(out, corpus), progress=False)
    assert not (out / "manifest.json").exists()  # refused before any work
    first.send_signal(signal.SIGKILL)  # dies holding the lock: the kernel releases it
    first.wait()
    assert harvest(tiny, config(out, corpus), progress=False).complete
    assert not (out / ".lock").exists()


def test_a_second_training_into_the_same_out_is_refused(tiny_dir, corpus, tmp_path, holder, capsys):
    assert main(["harvest", "--model", tiny_dir, "--corpus", corpus, "--sites", "L1.resid_post", "--n-tokens",
                 "300", "--ctx-len", "16", "--shard-tokens", "150", "--dtype", "float32",
                 "--out", str(tmp_path / "store")]) == 0
    first = holder(tmp_path / "sae" / "dictionaries")  # the trainer's out_dir
    args = ["train-sae", "--store", str(tmp_path / "store"), "--sites", "L1.resid_post", "--expansions", "2",
            "--k", "4", "--batch-size", "32", "--steps", "3", "--out", str(tmp_path / "sae"), "--device", "cpu"]
    capsys.readouterr()
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"The training run {tmp_path / 'sae' / 'dictionaries'} is being written by process {first.pid}" in err
    first.kill()
    first.wait()
    assert main(args) == 0


def test_the_lock_is_reentrant_in_its_process_and_leaves_nothing(tmp_path):
    with write_lock(tmp_path / "new", "x") as path:
        with write_lock(tmp_path / "new", "x"):
            assert path.read_text().startswith(f"{os.getpid()}@")
        assert path.exists()
    assert not (tmp_path / "new").exists()  # made for the lock, empty again: removed


# -- rejected commands leave nothing that blocks the corrected one -------------------------------
def test_a_rejected_harvest_does_not_block_the_corrected_command(tiny, tiny_dir, corpus, tmp_path, capsys):
    with pytest.raises(InputError, match="packs into only"):  # the corpus is too short for this
        harvest(tiny, config(tmp_path / "s", corpus, n_tokens=100_000), progress=False)
    assert not (tmp_path / "s").exists()
    assert harvest(tiny, config(tmp_path / "s", corpus), progress=False).complete
    # The same through the CLI, whose run record lives in the store directory.
    cli = ["harvest", "--model", tiny_dir, "--corpus", corpus, "--sites", "L0.resid_post", "--ctx-len", "16",
           "--shard-tokens", "60", "--dtype", "float32", "--out", str(tmp_path / "c")]
    assert main([*cli, "--n-tokens", "100000"]) == 2
    assert "packs into only" in capsys.readouterr().err
    assert main([*cli, "--n-tokens", "200"]) == 0
    # A manifest whose shards are all gone (a first run killed before its first shard) does not
    # block another size either: there is nothing to mix.
    for shard in (tmp_path / "s").glob("shard-*"):
        shutil.rmtree(shard)
    assert harvest(tiny, config(tmp_path / "s", corpus, n_tokens=120), progress=False).complete
    assert ActivationStore.open(tmp_path / "s").n_tokens == 120


# -- stale temps of dead processes -------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_incomplete_directories_of_dead_processes_are_removed(tmp_path, holder):
    dead, live = _dead_pid(), holder(tmp_path / "elsewhere").pid
    names = {
        "dead": f".incomplete-demo-20260101-000000-{dead}@{locks.HOST}",
        "dead_old_format": f".incomplete-demo-20260101-000001-{dead}",
        "live": f".incomplete-demo-20260101-000002-{live}@{locks.HOST}",
        "other_host": f".incomplete-demo-20260101-000003-{dead}@another-machine",
        "mine": f".incomplete-demo-20260101-000004-{os.getpid()}@{locks.HOST}",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    with RunRecord(tmp_path, "demo", {}):
        pass
    left = {p.name for p in tmp_path.iterdir() if p.name.startswith(".")}
    assert left == {names["live"], names["other_host"], names["mine"]}
    assert len(list_runs(tmp_path)) == 1
    # Artifacts written atomically (dictionaries, checkpoints) clean their siblings the same way.
    (tmp_path / "dicts").mkdir()
    (tmp_path / "dicts" / f".incomplete-d-{dead}@{locks.HOST}").mkdir()
    DICTIONARIES.get("topk")(DictionaryConfig(arch="topk", d_in=4, d_sae=8, k=2)).save(tmp_path / "dicts" / "d")
    assert [p.name for p in (tmp_path / "dicts").iterdir()] == ["d"]
    assert remove_stale_temps(tmp_path / "missing") == []


def test_two_runs_finishing_in_the_same_second_keep_both_records(tmp_path, monkeypatch):
    monkeypatch.setattr(record.time, "strftime", lambda fmt: "20260101-000000")
    first, second = RunRecord(tmp_path, "demo", {"n": 1}), RunRecord(tmp_path, "demo", {"n": 2})
    assert first.final == second.final  # both chose the name before either existed
    with first, second:
        pass
    runs = list_runs(tmp_path)
    assert len(runs) == 2 and first.final != second.final
    assert sorted(json.loads((r / "config.json").read_text())["n"] for r in runs) == [1, 2]

