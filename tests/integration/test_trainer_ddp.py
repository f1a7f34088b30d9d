"""Two CPU processes over gloo: DDP equals single-process training; sharded mode splits the
dictionaries over ranks and trains each exactly as one process would."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from interplab.activations.source import TensorSource
from interplab.dictionary import Dictionary, DictionaryConfig
from interplab.dictionary.topk import TopK
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.trainer import train

SITE = "L1.resid_post"
WORLD = 2


def source():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(24, 8, generator=g)
    x = (torch.rand(512, 24, generator=g) * (torch.rand(512, 24, generator=g) < 0.15)) @ basis + 0.5
    return TensorSource({SITE: x})


DICTS = [DictionaryConfig(arch="topk", d_in=8, d_sae=32, k=3, input_site=SITE, dead_after_tokens=96, aux_k=4),
         DictionaryConfig(arch="topk", d_in=8, d_sae=16, k=2, input_site=SITE),
         DictionaryConfig(arch="topk", d_in=8, d_sae=24, k=4, input_site=SITE)]


def cfg(out, parallel):
    return TrainConfig(steps=12, batch_size=64, lr=2e-3, log_every=4, checkpoint_every=5, init_tokens=128,
                       out_dir=str(out), parallel=parallel)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, port, out, parallel):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    seen = []
    original = TopK.training_step

    def spy(self, x, target=None):  # rows each rank's dictionaries see (this process only)
        seen.append(x.shape[0])
        return original(self, x, target)

    TopK.training_step = spy
    try:
        res = train(source(), DICTS, cfg(out, parallel), progress=False)
        assert set(seen) == {64 // WORLD if parallel == "ddp" else 64}
        if parallel == "sharded" and rank == 1:
            assert set(res.dictionaries) == {res.names[1]}  # dictionary i on rank i % world
        if rank == 0:
            assert set(res.paths) == set(res.names)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("parallel", ["ddp", "sharded"])
def test_two_ranks_match_one_process(tmp_path, parallel):
    mp.spawn(worker, args=(free_port(), str(tmp_path / "multi"), parallel), nprocs=WORLD, join=True)
    single = train(source(), DICTS, cfg(tmp_path / "single", "ddp"), progress=False)
    assert len(list((tmp_path / "multi" / "checkpoints").glob("step-*"))) == 2
    for name in single.names:
        ref = single.dictionaries[name].state_dict()
        got = Dictionary.load(tmp_path / "multi" / name).state_dict()
        for k in ref:
            if parallel == "sharded":
                assert torch.equal(got[k], ref[k]), (name, k)
            else:
                assert torch.allclose(got[k].double(), ref[k].double(), atol=1e-5, rtol=0), (name, k)
        lines = (tmp_path / "multi" / name / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 3
