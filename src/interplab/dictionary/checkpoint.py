"""Resumable training checkpoints: directories written atomically, tensors in safetensors.

``out_dir/checkpoints/step-00001000/`` holds

* ``state.json``: format, step, batches consumed, the dictionaries' names and configs, the
  training config's math fields, the identity of the source trained on (``inputs.py``: a
  store's path and content hash, ...), and each optimizer's structure (param groups, non-tensor
  state) with its tensors replaced by keys into ``optimizer.safetensors``;
* ``dictionaries.safetensors``: every dictionary's state dict (weights and buffers: scales,
  firing counters, thresholds), keys ``<i>/<name>``;
* ``optimizer.safetensors``: the optimizers' state tensors (Adam's step, exp_avg, exp_avg_sq);
* ``rng.safetensors``: torch's CPU (and CUDA) generator states.

No pickles (DESIGN rule 8): the optimizer state dict is flattened into tensors + JSON, which
round-trips any torch optimizer whose state is tensors and plain numbers. The learning-rate
schedule is a pure function of the step (``schedule.py``), so it has no state to store.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from interplab.core.artifacts import atomic_directory, write_json
from interplab.core.errors import ConfigError, InterplabError
from interplab.dictionary.inputs import check_same_source

log = logging.getLogger(__name__)

FORMAT = "interplab-train-checkpoint/1"


@dataclass
class Checkpoint:
    """A loaded checkpoint (tensors on CPU)."""

    path: Path
    step: int
    batches_consumed: int
    names: list[str]
    dict_configs: list[dict]
    train_config: dict
    model_states: list[dict[str, Tensor]]
    optimizer_states: list[dict]
    rng: dict[str, Tensor]
    source: dict | None = None  # source_identity of the data trained on (None: older checkpoints)


def flatten_optimizer(state: dict, prefix: str) -> tuple[dict[str, Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (keyed under ``prefix``) and JSON."""
    tensors: dict[str, Tensor] = {}
    per_param: dict[str, dict] = {}
    for pid, entry in state["state"].items():
        out = {}
        for key, value in entry.items():
            if isinstance(value, Tensor):
                name = f"{prefix}/{pid}/{key}"
                tensors[name] = value.detach().cpu().contiguous()
                out[key] = {"tensor": name}
            else:
                out[key] = {"value": value}
        per_param[str(pid)] = out
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def unflatten_optimizer(structure: dict, tensors: dict[str, Tensor]) -> dict:
    state = {
        int(pid): {k: tensors[v["tensor"]] if "tensor" in v else v["value"] for k, v in entry.items()}
        for pid, entry in structure["state"].items()
    }
    return {"state": state, "param_groups": structure["param_groups"]}


def rng_state() -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def set_rng_state(state: dict[str, Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[k] for k in sorted(k for k in state if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def save_checkpoint(out_dir: str | Path, *, step: int, batches_consumed: int, names: list[str],
                    dict_configs: list[dict], train_config: dict, model_states: list[dict[str, Tensor]],
                    optimizer_states: list[dict], keep: int = 2, source: dict | None = None) -> Path:
    """Write ``checkpoints/step-<step>`` atomically, then drop all but the ``keep`` latest."""
    root = checkpoints_dir(out_dir)
    path = root / f"step-{step:08d}"
    models = {f"{i}/{k}": v.detach().cpu().contiguous() for i, s in enumerate(model_states) for k, v in s.items()}
    opt_tensors: dict[str, Tensor] = {}
    structures = []
    for i, s in enumerate(optimizer_states):
        t, struct = flatten_optimizer(s, str(i))
        opt_tensors.update(t)
        structures.append(struct)
    with atomic_directory(path, overwrite=True) as tmp:
        save_file(models, str(tmp / "dictionaries.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_state(), str(tmp / "rng.safetensors"))
        write_json(tmp / "state.json", {
            "format": FORMAT, "step": step, "batches_consumed": batches_consumed, "names": names,
            "dictionaries": dict_configs, "train": train_config, "optimizers": structures, "source": source,
        })
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d -> %s", step, path)
    return path


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory (incomplete ones have temp names), or None."""
    done = [p for p in checkpoints_dir(out_dir).glob("step-*") if (p / "state.json").is_file()]
    return max(done, default=None)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    meta = json.loads((path / "state.json").read_text())
    if meta.get("format") != FORMAT:
        raise InterplabError(f"{path} is not an interplab training checkpoint (format {meta.get('format')!r}).")
    flat = load_file(str(path / "dictionaries.safetensors"))
    n = len(meta["names"])
    models: list[dict[str, Tensor]] = [{} for _ in range(n)]
    for key, value in flat.items():
        i, name = key.split("/", 1)
        models[int(i)][name] = value
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    return Checkpoint(
        path=path, step=meta["step"], batches_consumed=meta["batches_consumed"], names=meta["names"],
        dict_configs=meta["dictionaries"], train_config=meta["train"], model_states=models,
        optimizer_states=[unflatten_optimizer(s, opt_tensors) for s in meta["optimizers"]],
        rng=load_file(str(path / "rng.safetensors")), source=meta.get("source"),
    )


def check_compatible(ckpt: Checkpoint, names: list[str], dict_configs: list[dict], train_config: dict,
                     source: dict | None = None) -> None:
    """Refuse to resume a checkpoint written for other dictionaries, other training math or
    (given this run's ``source`` identity) other data."""
    if source is not None:
        check_same_source(ckpt.source, source, ckpt.path)
    diffs: list[str] = []
    if ckpt.names != names:
        diffs.append(f"dictionaries: checkpoint has {ckpt.names}, this run asks for {names}")
    else:
        for name, old, new in zip(names, ckpt.dict_configs, dict_configs):
            diffs += [f"{name}.{k}: {old.get(k)!r} -> {new.get(k)!r}"
                      for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    diffs += [f"train.{k}: {ckpt.train_config.get(k)!r} -> {train_config.get(k)!r}"
              for k in sorted(set(ckpt.train_config) | set(train_config))
              if ckpt.train_config.get(k) != train_config.get(k)]
    if diffs:
        raise ConfigError(
            f"Cannot resume from {ckpt.path}: it was written with a different setup ("
            + "; ".join(diffs) + "). Resume with the original settings, or train into a new out_dir."
        )
