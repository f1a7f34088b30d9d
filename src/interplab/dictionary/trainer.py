"""Train several sparse dictionaries (sites × sizes × architectures) from one pass over a source.

Each batch a ``BatchSource`` yields is fed to every dictionary (reading
``batch[cfg.input_site]``, targeting ``batch[cfg.target_site]``); each has its own Adam and
learning-rate schedule. Before the first step the scales and decoder bias are set from the
first ``init_tokens`` of the stream (``init.py``); each step then does, per dictionary:
``training_step`` → backward → [drop the gradient along decoder rows] → [clip] → Adam →
[renormalise decoder rows] → ``update_firing`` (the dead-latent counters AuxK reads). The
unit-norm constraint and AuxK follow Gao et al. 2024 ("Scaling and evaluating sparse
autoencoders"); the one-pass, many-dictionaries layout follows EleutherAI's sparsify.

The step stays lean: tensors are turned into Python numbers only every ``log_every`` steps
(one ``tolist`` per dictionary), Adam is fused on CUDA and ``foreach`` on CPU, and the
learning rate is a float written into the param group. Checkpoints (``checkpoint.py``) make a
resumed run bit-identical on CPU to an uninterrupted one; ``distributed.py`` splits the work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interplab.activations.source import BatchSource
from interplab.core.artifacts import now
from interplab.core.errors import ConfigError, InterplabError
from interplab.core.hardware import resolve_matmul_dtype
from interplab.core.locks import write_lock
from interplab.dictionary.base import DICTIONARIES, Dictionary, DictionaryConfig
from interplab.dictionary.checkpoint import (
    check_compatible,
    checkpoints_dir,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from interplab.dictionary.distributed import Parallel
from interplab.dictionary.guard import Watch, check_sample
from interplab.dictionary.init import initialize
from interplab.dictionary.inputs import source_identity
from interplab.dictionary.schedule import lr_at
from interplab.dictionary.train_config import TrainConfig
from interplab.dictionary.train_files import publish, recover_run_dir, truncate_metrics
from interplab.dictionary.train_setup import check_setup, init_sample, make_optimizer

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The trained dictionaries (on rank 0: all of them), where they were saved, final metrics."""

    config: TrainConfig
    dictionaries: dict[str, Dictionary]
    paths: dict[str, Path]
    metrics: dict[str, dict[str, float]]
    steps: int
    tokens: int
    resumed_from: int | None = None
    names: list[str] = field(default_factory=list)
    source: dict | None = None  # inputs.source_identity of the data trained on


def train(source: BatchSource, dict_configs: list[DictionaryConfig], cfg: TrainConfig, progress: bool = True,
          on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train every dictionary in ``dict_configs`` on ``source``; save them under ``cfg.out_dir``.

    ``on_step(step)`` is called after each step (and its checkpoint); tests use it to
    simulate a crash. Under torch.distributed see ``distributed.py``. Non-finite numbers stop
    training (``guard.py``); resuming on another source than the checkpoint's is refused (``inputs.py``).
    """
    names = check_setup(source, dict_configs, cfg)
    par = Parallel.setup(cfg.parallel, cfg.device)
    # One writer per out_dir (its main process holds the lock): a second training there is refused.
    lock = write_lock(cfg.out_dir, f"The training run {cfg.out_dir}") if par.is_main else contextlib.nullcontext()
    try:
        with lock:
            return _Run(source, dict_configs, cfg, names, par, source_identity(source)).run(progress, on_step)
    finally:
        par.close()


class _Run:
    def __init__(self, source, dict_configs, cfg: TrainConfig, names: list[str], par: Parallel, source_id: dict) -> None:
        par.check_batch(cfg.batch_size)
        self.source, self.cfgs, self.cfg, self.names, self.par = source, dict_configs, cfg, names, par
        self.source_id, self.last_ckpt = source_id, None
        self.watch = Watch(source, sorted({s for dc in dict_configs for s in (dc.input_site, dc.target_site)}),
                           names, cfg.batch_size, par.device, par.min_over_ranks)
        self.out = Path(cfg.out_dir)
        self.run_dirs = [self.out / n for n in names]
        self.owned = [i for i in range(len(dict_configs)) if par.owns(i)]
        self.dicts: dict[int, Dictionary] = {}
        self.opts: dict[int, torch.optim.Optimizer] = {}
        self.base_lr = [cfg.lr_for(dc.d_sae) for dc in dict_configs]
        self.last: dict[int, dict] = {}
        self.files: dict[int, object] = {}
        self.started = now()

    def writes_metrics(self, i: int) -> bool:
        return self.par.owner(i) == self.par.rank

    # -- setup -------------------------------------------------------------------------------
    def prepare(self) -> int | None:
        cfg, par = self.cfg, self.par
        ckpt_path = latest_checkpoint(self.out)
        if not cfg.resume and (ckpt_path is not None or any(p.exists() for p in self.run_dirs)):
            raise ConfigError(
                f"{self.out} already holds a training run (checkpoints or dictionary directories). "
                "Pass resume=True to continue it, or choose another out_dir."
            )
        for i in self.owned:
            d = DICTIONARIES.get(self.cfgs[i].arch)(self.cfgs[i]).to(par.device)
            d.train()
            if hasattr(d, "sparse_step"):  # TopK: the sparse step (sparse_ops.py)
                d.sparse_step = cfg.sparse_step
                bf16 = resolve_matmul_dtype(cfg.matmul_dtype, par.device) == "bfloat16"
                d.compute_dtype = torch.bfloat16 if bf16 else None
            self.dicts[i] = d
            self.opts[i] = make_optimizer(d, cfg, self.base_lr[i])
        if cfg.resume and ckpt_path is not None:
            return self._load(ckpt_path)
        torch.manual_seed(cfg.seed)
        sample = init_sample(self.source, cfg, {s for dc in self.cfgs for s in (dc.input_site, dc.target_site)})
        check_sample(self.source, sample)
        for i, d in self.dicts.items():
            dc = self.cfgs[i]
            initialize(d, sample[dc.input_site], sample[dc.target_site], cfg.b_dec_init, cfg.normalize)
            if cfg.decoder == "unit_norm":
                d.normalize_decoder()
            par.broadcast_dictionary(d)
        for i in self.owned:
            if self.writes_metrics(i):
                self.run_dirs[i].mkdir(parents=True, exist_ok=True)
                truncate_metrics(self.run_dirs[i] / "metrics.jsonl", 0)
        return None

    def _load(self, path: Path) -> int:
        ckpt = load_checkpoint(path)
        check_compatible(ckpt, self.names, [dc.to_json() for dc in self.cfgs], self.cfg.math_json(), self.source_id)
        self.last_ckpt = path
        for i, d in self.dicts.items():
            try:
                d.load_state_dict(ckpt.model_states[i])
            except RuntimeError as e:
                raise InterplabError(
                    f"Checkpoint {path} does not hold a {d.arch!r} dictionary's state for {self.names[i]}: {e}"
                ) from e
            self.opts[i].load_state_dict(ckpt.optimizer_states[i])
            if self.writes_metrics(i):
                recover_run_dir(self.run_dirs[i])
                self.run_dirs[i].mkdir(parents=True, exist_ok=True)
                truncate_metrics(self.run_dirs[i] / "metrics.jsonl", ckpt.step)
        set_rng_state(ckpt.rng)
        log.info("resuming from %s (step %d)", path, ckpt.step)
        assert ckpt.batches_consumed == ckpt.step  # one batch per step
        return ckpt.step

    # -- the loop ----------------------------------------------------------------------------
    def run(self, progress: bool, on_step) -> TrainResult:
        cfg, par = self.cfg, self.par
        resumed = self.prepare()
        start, total = resumed or 0, cfg.total_steps
        self.files = {i: open(self.run_dirs[i] / "metrics.jsonl", "a") for i in self.owned if self.writes_metrics(i)}
        log.info("training %d dictionaries for %d steps of %d tokens (rank %d/%d, %s)", len(self.cfgs), total,
                 cfg.batch_size, par.rank, par.world, par.mode if par.active else "single process")
        it = self.source.batches(cfg.batch_size, seed=cfg.seed, start_batch=start)
        try:
            with tqdm(total=total, initial=start, desc="train", unit="step",
                      disable=not progress or not par.is_main) as bar:
                for step in range(start, total):
                    log_now = (step + 1) % cfg.log_every == 0 or step + 1 == total
                    self.step(next(it) if self.dicts else None, step, log_now)
                    if par.device.type == "cpu" or log_now:
                        self.watch.check(self.last_ckpt)  # where the host syncs anyway (and at checkpoints)
                    if log_now and self.last and par.is_main:
                        first = self.last[min(self.last)]
                        bar.set_postfix(fvu=f"{first['fvu']:.3f}", l0=f"{first['l0']:.1f}", dead=first["n_dead"])
                    if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total:
                        self.checkpoint(step + 1)
                    if on_step is not None:
                        on_step(step + 1)
                    bar.update(1)
        finally:
            for f in self.files.values():
                f.close()
        return self.finish(total, resumed)

    def step(self, batch, step: int, log_now: bool) -> None:
        cfg, par = self.cfg, self.par
        moved: dict[str, torch.Tensor] = {}
        for i, d in self.dicts.items():
            dc, opt = self.cfgs[i], self.opts[i]
            for s in (dc.input_site, dc.target_site):
                if s not in moved:
                    moved[s] = par.rows(batch[s]).to(par.device, non_blocking=True)
                    self.watch.note_input(s, step, moved[s])
            x = moved[dc.input_site]
            out = d.training_step(x, moved[dc.target_site])
            self.watch.note_loss(i, step, out.loss)
            out.loss.backward()
            par.average_grads(d)
            if cfg.decoder == "unit_norm":
                d.remove_parallel_grad()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(d.parameters(), cfg.grad_clip, foreach=True)
            lr = lr_at(step, self.base_lr[i], cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cfg.decoder == "unit_norm":
                d.normalize_decoder()
            d.update_firing(fired=out.fired, n_tokens=x.shape[0])
            par.sync_buffers(d, x.shape[0], cfg.batch_size)
            if log_now:
                self.log_metrics(i, step, lr, {"loss": out.loss, **out.parts}, d)

    def log_metrics(self, i: int, step: int, lr: float, parts: dict, d: Dictionary) -> None:
        keys = list(parts)
        values = torch.stack([parts[k].detach().float() for k in keys] + [d.dead_mask().sum().float()]).tolist()
        vals = self.par.mean_metrics(dict(zip([*keys, "n_dead"], values)))
        record = {"step": step + 1, "tokens": (step + 1) * self.cfg.batch_size, "lr": lr,
                  **{k: vals[k] for k in keys}, "n_dead": round(vals["n_dead"])}
        self.last[i] = record
        if i in self.files:
            self.files[i].write(json.dumps(record) + "\n")
            self.files[i].flush()

    # -- checkpoints and final artifacts -----------------------------------------------------
    def _states(self, to_cpu: bool) -> dict[int, tuple]:
        def cpu(t):
            return t.detach().cpu() if to_cpu and isinstance(t, torch.Tensor) else t

        out = {}
        for i, d in self.dicts.items():
            if self.par.ddp and not self.par.is_main:
                continue  # rank 0 holds identical copies
            opt = self.opts[i].state_dict()
            opt = {"state": {p: {k: cpu(v) for k, v in s.items()} for p, s in opt["state"].items()},
                   "param_groups": opt["param_groups"]}
            out[i] = ({k: cpu(v) for k, v in d.state_dict().items()}, opt, self.last.get(i))
        return out

    def _gathered(self) -> dict[int, tuple] | None:
        """Every dictionary's (state, optimizer state, last metrics) on rank 0; None elsewhere."""
        sharded = self.par.active and not self.par.ddp
        parts = self.par.gather(self._states(to_cpu=sharded)) if sharded else [self._states(False)]
        if not self.par.is_main:
            return None
        merged: dict[int, tuple] = {}
        for p in parts:
            merged.update(p)
        return merged

    def checkpoint(self, step: int) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
        self.watch.check(self.last_ckpt, self.dicts, step)
        states = self._gathered()
        if states is not None:
            n = len(self.cfgs)
            save_checkpoint(self.out, step=step, batches_consumed=step, names=self.names,
                            dict_configs=[dc.to_json() for dc in self.cfgs], train_config=self.cfg.math_json(),
                            model_states=[states[i][0] for i in range(n)],
                            optimizer_states=[states[i][1] for i in range(n)], keep=self.cfg.keep_checkpoints,
                            source=self.source_id)
        self.par.barrier()
        self.last_ckpt = checkpoints_dir(self.out) / f"step-{step:08d}"

    def finish(self, total: int, resumed: int | None) -> TrainResult:
        cfg = self.cfg
        self.watch.check(self.last_ckpt, self.dicts, total)
        states = self._gathered()
        self.par.barrier()  # every rank's metrics.jsonl is closed before rank 0 moves the directories
        dicts, paths, metrics = {}, {}, {}
        if states is not None:
            for i, name in enumerate(self.names):
                d = self.dicts.get(i)
                if d is None:
                    d = DICTIONARIES.get(self.cfgs[i].arch)(self.cfgs[i])
                    d.load_state_dict(states[i][0])
                final = states[i][2] or {}
                training = {"name": name, "train_config": cfg.to_json(), "steps": total,
                            "tokens": total * cfg.batch_size, "final_metrics": final, "world_size": self.par.world,
                            "parallel": self.par.mode if self.par.active else None, "source": self.source_id}
                paths[name] = publish(d, self.run_dirs[i], training, seed=cfg.seed, started=self.started)
                dicts[name], metrics[name] = d.eval(), final
        else:
            dicts = {self.names[i]: d.eval() for i, d in self.dicts.items()}
        self.par.barrier()
        return TrainResult(config=cfg, dictionaries=dicts, paths=paths, metrics=metrics, steps=total,
                           tokens=total * cfg.batch_size, resumed_from=resumed, names=self.names,
                           source=self.source_id)
