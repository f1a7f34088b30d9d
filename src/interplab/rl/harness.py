"""The GRPO training harness: TRL's ``GRPOTrainer`` on an interplab model, with a KL penalty to a
frozen reference, optional LoRA, seeds, checkpoints and monitors logged into the run directory.

TRL 1.16 runs on the CPU here (``use_cpu=True``; two steps of a tiny Llama take well under a
second), so this wraps it rather than re-implementing it; ``rl.grpo_loss`` is the hand-written
loss the tests hold TRL's ``compute_loss`` to.

What the harness adds to a bare ``GRPOTrainer``:

- the policy is a *copy* of the model's HF module: the caller's model (the frozen reference that
  internals-based rewards read, ``rewards.InternalsReader``) is never trained or mutated;
- β defaults to 0.04 (``GRPOSettings.beta``; TRL's default is 0, no KL penalty at all). TRL
  builds its reference by reloading the policy from ``config._name_or_path``; the harness
  saves the initial policy to a temporary directory and points the policy there for that one
  load, so the reference equals the starting weights exactly for any source (GGUF included).
  With LoRA TRL's reference is the base model with the adapter disabled;
- every logging step appends one JSON line to ``metrics.jsonl`` (TRL's own metrics — ``reward``,
  ``kl``, ``loss``, ``entropy`` … — and the held-out monitors of ``rl.monitors``); sample
  completions are kept at every checkpoint and at the end.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interplab.core.errors import InputError
from interplab.rl.config import GRPOSettings
from interplab.rl.monitors import HeldOutMonitor

__all__ = ["GRPORun", "build_trainer", "train_grpo"]

log = logging.getLogger(__name__)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class GRPORun:
    """What a training run leaves: the per-logging-step metrics, the sample completions at
    checkpoints and the end, the checkpoint directories, and the trained policy (HF module)."""

    metrics: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    policy: object = None
    trainer: object = None


def _check_prompts(prompts: Sequence[str], settings: GRPOSettings) -> list[str]:
    prompts = list(prompts)
    if not prompts:
        raise InputError("The prompt list is empty; GRPO needs at least one prompt to sample completions for.")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise InputError(f"Prompts {bad[:5]} are empty or not strings; give non-empty text prompts.")
    if len(prompts) < settings.prompts_per_step:
        raise InputError(f"prompts_per_step={settings.prompts_per_step} but only {len(prompts)} prompts; lower "
                         "prompts_per_step or give more prompts.")
    return prompts


def _hf_and_tokenizer(model):
    hf = getattr(model, "hf", model)
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError("GRPO needs the model's tokenizer (the model was loaded without one); load it with "
                         "interplab.runtime.loading.load(path) or pass a HookedModel built with a tokenizer.")
    if tok.pad_token_id is None:
        raise InputError("The tokenizer has no pad token; GRPO pads groups of completions. Set "
                         "tokenizer.pad_token = tokenizer.eos_token first.")
    return hf, tok


def grpo_args(settings: GRPOSettings, out_dir: Path, seed: int, device: str = "cpu", progress: bool = False):
    """The ``trl.GRPOConfig`` of ``settings``: one optimizer step per generation batch of
    ``prompts_per_step × num_generations`` completions, nothing reported to the network."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(out_dir / "checkpoints"), max_steps=settings.steps,
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        gradient_accumulation_steps=1, num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length, learning_rate=settings.learning_rate,
        beta=settings.beta, epsilon=settings.epsilon, temperature=settings.temperature,
        use_cpu=device == "cpu", report_to="none", seed=seed, data_seed=seed,
        logging_steps=settings.logging_steps, save_strategy="steps" if settings.save_steps else "no",
        save_steps=settings.save_steps or 500, save_only_model=True, disable_tqdm=not progress,
        bf16=False, fp16=False, dataloader_num_workers=0,
    )


def build_trainer(model, reward: Callable | Sequence[Callable], prompts: Sequence[str], settings: GRPOSettings,
                  out_dir: str | Path, seed: int = 0, callbacks: Sequence = (), progress: bool = False):
    """A ``trl.GRPOTrainer`` training a copy of ``model``'s HF module on ``prompts``."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOTrainer

    prompts = _check_prompts(prompts, settings)
    hf, tok = _hf_and_tokenizer(model)
    out_dir = Path(out_dir)
    set_seed(seed)
    policy = copy.deepcopy(hf)
    policy.requires_grad_(True)
    policy.train()
    peft_config = None
    if settings.lora_r:
        from peft import LoraConfig

        names = {n.rsplit(".", 1)[-1] for n, _ in policy.named_modules()}
        targets = [t for t in LORA_TARGETS if t in names]
        if not targets:
            raise InputError(f"lora_r={settings.lora_r} but the model has none of the projections {LORA_TARGETS}; "
                             "use lora_r=0.")
        peft_config = LoraConfig(r=settings.lora_r, lora_alpha=2 * settings.lora_r, target_modules=targets,
                                 lora_dropout=0.0, task_type="CAUSAL_LM")
    device = str(next(hf.parameters()).device)
    args = grpo_args(settings, out_dir, seed, "cpu" if device == "cpu" else "cuda", progress)
    data = Dataset.from_dict({"prompt": prompts})
    funcs = list(reward) if isinstance(reward, (list, tuple)) else [reward]
    with tempfile.TemporaryDirectory(prefix="interplab-ref-") as tmp:
        name = policy.config._name_or_path
        if settings.beta and not settings.lora_r:  # TRL reloads the reference from this path
            policy.save_pretrained(tmp)
            policy.config._name_or_path = tmp
        try:
            trainer = GRPOTrainer(model=policy, reward_funcs=funcs, args=args, train_dataset=data,
                                  processing_class=tok, callbacks=list(callbacks), peft_config=peft_config)
        finally:
            policy.config._name_or_path = name
    if trainer.ref_model is not None:
        trainer.ref_model.requires_grad_(False)
    return trainer


def _hooked(policy, tokenizer):
    from interplab.runtime.hooked import HookedModel

    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    was = base.training
    hooked = HookedModel(base, tokenizer)  # HookedModel puts the module in eval mode
    base.train(was)
    return hooked


def _monitor_callback(run: GRPORun, path: Path, tokenizer, monitor: HeldOutMonitor | None, reward):
    from transformers import TrainerCallback

    class MonitorCallback(TrainerCallback):
        """Writes one metrics line per logging step; keeps samples at checkpoints and the end."""

        last_samples: list = []

        def on_log(self, args, state, control, logs=None, model=None, **kw):
            if not logs or "train_runtime" in logs:  # the end-of-training summary line
                return
            row = {"step": state.global_step, **{k: float(v) for k, v in logs.items()
                                                 if isinstance(v, (int, float))}}
            parts = getattr(reward, "last", None)
            if isinstance(parts, dict):  # a Combined reward's per-part means (weight-0 monitors)
                row |= {f"part/{k}": float(v) for k, v in parts.items() if isinstance(v, (int, float))}
            if monitor is not None and model is not None:
                hooked = _hooked(model, tokenizer)
                was = model.training
                try:
                    metrics, samples = monitor(hooked, tokenizer)
                finally:
                    model.train(was)
                row |= metrics
                self.last_samples = [{"step": state.global_step, **s} for s in samples]
            row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            run.metrics.append(row)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")

        def on_save(self, args, state, control, **kw):
            run.checkpoints.append(str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))
            run.samples += self.last_samples

        def on_train_end(self, args, state, control, **kw):
            if self.last_samples and not any(s["step"] == state.global_step for s in run.samples):
                run.samples += self.last_samples

    return MonitorCallback()


def train_grpo(model, reward: Callable, prompts: Sequence[str], settings: GRPOSettings, out_dir: str | Path,
               seed: int = 0, monitor: HeldOutMonitor | None = None, progress: bool = False) -> GRPORun:
    """Train a copy of ``model`` (a ``HookedModel``; it stays unchanged — the frozen reference)
    with GRPO on ``prompts`` and ``reward`` (TRL's signature ``reward(prompts, completions,
    **kw) -> list[float]``); metrics go to ``out_dir/metrics.jsonl``, checkpoints (every
    ``save_steps``) to ``out_dir/checkpoints``."""
    _check_prompts(prompts, settings)  # refused before anything is written
    _, tok = _hf_and_tokenizer(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.jsonl"
    path.write_text("")
    run = GRPORun()
    callback = _monitor_callback(run, path, tok, monitor, reward)
    trainer = build_trainer(model, reward, prompts, settings, out_dir, seed, [callback], progress)
    with torch.random.fork_rng(devices=[]):  # training's sampling does not move the caller's RNG
        trainer.train()
    run.policy, run.trainer = trainer.model, trainer
    log.info("GRPO: %d steps, %d metric rows, %d checkpoints", settings.steps, len(run.metrics),
             len(run.checkpoints))
    return run
