"""Harvest across processes: a real subprocess killed with SIGKILL (between a shard's rename
and the manifest update, then in the middle of writing a shard) resumes to the very store an
uninterrupted run writes; two ranks over gloo write the same store as one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import interplab
from interplab.activations import ActivationStore, harvest

from .test_harvest import SITES, config, save_tiny, write_corpus

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

KILLABLE = textwrap.dedent("""
    import sys, time
    import torch
    torch.set_num_threads(1)
    import interplab
    from interplab.activations import HarvestConfig, harvest
    from interplab.activations import shards as st

    model_dir, out, corpus, where = sys.argv[1:5]
    real_shard, real_save = st.write_shard, st._save

    def after_shard(root, index, *a):
        meta = real_shard(root, index, *a)
        print("renamed", index, flush=True)  # renamed, manifest not yet rewritten
        if index == 1:
            time.sleep(60)
        return meta

    def mid_shard(tensors, path):
        real_save(tensors, path)
        print("wrote", path.parent.name, path.name, flush=True)
        time.sleep(60)

    if where == "after_shard":
        st.write_shard = after_shard
    else:
        st._save = mid_shard
    cfg = HarvestConfig(out=out, model="tiny", sites={sites!r}, n_tokens=200, ctx_len=16,
                        batch_size=3, dtype="float32", shard_tokens=60, corpus=corpus)
    harvest(interplab.load(model_dir), cfg, progress=False)
""").format(sites=SITES)

RANKS = textwrap.dedent("""
    import os
    import sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp

    def worker(rank, model_dir, out, corpus, rendezvous):
        torch.set_num_threads(1)
        import interplab
        from interplab.activations import HarvestConfig, harvest
        dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=2)
        try:
            cfg = HarvestConfig(out=out, model="tiny", sites={sites!r}, n_tokens=200, ctx_len=16,
                                batch_size=3, dtype="float32", shard_tokens=60, corpus=corpus)
            report = harvest(interplab.load(model_dir), cfg, progress=False)
            # one write(2) per line: both ranks share the pipe, and print() under
            # PYTHONUNBUFFERED writes each argument separately, so lines could interleave
            os.write(1, f"rank {{rank}} wrote {{report.shards_written}} {{report.content_hash}}\\n".encode())
        finally:
            dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(worker, args=tuple(sys.argv[1:5]), nprocs=2)
""").format(sites=SITES)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("process")
    model_dir = save_tiny(root / "tiny")
    corpus = write_corpus(root / "docs.txt")
    clean = harvest(interplab.load(model_dir), config(root / "clean", corpus), progress=False)
    return root, model_dir, corpus, clean


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _kill_when(cmd: list[str], marker: str) -> str:
    """Run ``cmd`` until a stdout line starts with ``marker``, then SIGKILL it."""
    lines = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()) as proc:
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith(marker):
                    break
            else:
                pytest.fail(f"never reached {marker!r}: {''.join(lines)}{proc.stderr.read()}")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return "".join(lines)


def test_sigkill_at_any_moment_then_rerun_gives_the_same_store(setup):
    root, model_dir, corpus, clean = setup
    out = root / "killed"
    script = root / "killable.py"
    script.write_text(KILLABLE)
    # 1: killed after shard 1 is renamed into place but before the manifest lists it
    _kill_when([sys.executable, str(script), model_dir, str(out), corpus, "after_shard"], "renamed 1")
    listed = [s["index"] for s in ActivationStore.open(out, allow_partial=True).manifest["shards"]]
    assert listed == [0] and (out / "shard-00001").is_dir()
    # 2: killed in the middle of writing shard 2 (one file of three written to the temp dir)
    _kill_when([sys.executable, str(script), model_dir, str(out), corpus, "mid_shard"], "wrote .tmp-shard-00002")
    assert any(p.name.startswith(".tmp-shard-00002") for p in out.iterdir())
    # 3: the same command again finishes the store: exactly n_tokens, same shards as a clean run
    report = harvest(interplab.load(model_dir), config(out, corpus), progress=False)
    assert report.shards_skipped == 2 and report.shards_written == 2
    assert report.complete and report.n_tokens == 200 and report.content_hash == clean.content_hash
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", *[f"shard-0000{i}" for i in range(4)]]
    store, ref = ActivationStore.open(out, verify=True), ActivationStore.open(clean.path)
    assert store.manifest["shards"] == ref.manifest["shards"]


def test_two_ranks_over_gloo_write_the_single_process_store(setup):
    root, model_dir, corpus, clean = setup
    script = root / "ranks.py"
    script.write_text(RANKS)
    out = root / "dist"
    done = subprocess.run([sys.executable, str(script), model_dir, str(out), corpus, str(root / "rdzv")],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[:4] for line in done.stdout.splitlines()) == [
        ["rank", "0", "wrote", "2"], ["rank", "1", "wrote", "2"]]
    store, ref = ActivationStore.open(out, verify=True), ActivationStore.open(clean.path)
    assert store.manifest["content_hash"] == clean.content_hash
    assert store.manifest["shards"] == ref.manifest["shards"]
