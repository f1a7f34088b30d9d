"""A one-layer transformer trained here on modular addition, whose mechanism is known in part.

Task: tokens ``(a, b, =)`` → ``(a + b) mod p`` at the ``=`` position, ``p`` prime, a fixed
fraction of the ``p²`` pairs for training and the rest held out. Known a priori (Nanda et al.
2023, "Progress measures for grokking via mechanistic interpretability"): a network that
generalises computes with ``cos`` / ``sin`` of a few key frequencies ``w_k = 2πk/p``, so its
token embedding is sparse in the discrete Fourier basis over the token axis. Measured here:
which frequencies carry the embedding's norm (``fourier_key_frequencies``) and what the model
does with the embedding projected onto, or off, them (``fourier_ablation_accuracy``).

Training (``train_modular_addition``): full-batch AdamW with weight decay for a FIXED number of
steps (the held-out pairs never choose when to stop), scored on an exponential moving average
of the weights; deterministic in the seed on one CPU thread. Generalisation ("grokking") takes
a few thousand steps — minutes on a CPU — so the model trained with the default config ships
with the package (``pretrained_modular_addition``; ``groundtruth/data/``) and the tests load it;
a slow test retrains it and checks the same properties.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from interplab.core.config import param, to_dict
from interplab.core.errors import ConfigError, InputError
from interplab.groundtruth.trained import Trained, TrainingError
from interplab.models.toy import ToyConfig, ToyForCausalLM

DATA = Path(__file__).resolve().parent / "data"
PRETRAINED = "modadd_p31_seed0"


@dataclass(frozen=True)
class ModularAdditionConfig:
    """Task, model and optimiser of the modular-addition model."""

    p: int = param(31, help="Modulus (prime); tokens 0..p-1 are numbers, token p is '='.")
    train_fraction: float = param(0.8, help="Fraction of the p² pairs trained on; the rest are held out.")
    d_model: int = param(128, help="Residual width.")
    n_heads: int = param(4, help="Attention heads.")
    d_head: int = param(32, help="Width of each head.")
    d_mlp: int = param(256, help="MLP width.")
    lr: float = param(3e-3, help="AdamW learning rate.")
    weight_decay: float = param(0.3, help="AdamW weight decay (drives the generalising solution).")
    beta2: float = param(0.98, help="AdamW beta2.")
    ema: float = param(0.98, help="Decay of the weight average that is scored and returned.")
    steps: int = param(3000, help="Full-batch training steps (fixed: held-out accuracy never stops training).")
    seed: int = param(0, help="Seed of the initialisation and of the train / held-out split.")

    def __post_init__(self) -> None:
        if self.p < 3 or any(self.p % k == 0 for k in range(2, math.isqrt(self.p) + 1)):
            raise ConfigError(f"p must be a prime >= 3, got {self.p}.")
        if not 0 < self.train_fraction < 1:
            raise ConfigError(f"train_fraction must be in (0, 1), got {self.train_fraction}.")
        if not 0 <= self.ema < 1 or self.steps < 1:
            raise ConfigError("Need 0 <= ema < 1 and steps >= 1.")


def modular_addition_data(p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair as ``[a, b, p]`` tokens ``[p², 3]`` and the answers ``(a + b) mod p``."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], 1)
    return tokens, (tokens[:, 0] + tokens[:, 1]) % p


def split(cfg: ModularAdditionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and held-out pairs (a seeded permutation)."""
    perm = torch.randperm(cfg.p * cfg.p, generator=torch.Generator().manual_seed(cfg.seed))
    n_train = int(cfg.train_fraction * cfg.p * cfg.p)
    return perm[:n_train], perm[n_train:]


def accuracy(model, tokens: torch.Tensor, answers: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(tokens).logits[:, -1].argmax(-1) == answers).float().mean().item()


def _model(cfg: ModularAdditionConfig) -> ToyForCausalLM:
    return ToyForCausalLM(ToyConfig(vocab_size=cfg.p + 1, n_ctx=3, d_model=cfg.d_model, n_layers=1,
                                    n_heads=cfg.n_heads, d_head=cfg.d_head, d_mlp=cfg.d_mlp,
                                    use_cache=False, initializer_range=0.02))


def _trained(model, cfg: ModularAdditionConfig, info: dict) -> Trained:
    tokens, answers = modular_addition_data(cfg.p)
    train_idx, test_idx = split(cfg)
    info = {**info, "p": cfg.p, "train_accuracy": accuracy(model, tokens[train_idx], answers[train_idx]),
            "config": to_dict(cfg)}
    return Trained(model.eval(), None, accuracy(model, tokens[test_idx], answers[test_idx]), info)


def train_modular_addition(cfg: ModularAdditionConfig = ModularAdditionConfig(), min_accuracy: float = 0.99) -> Trained:
    """Train for ``cfg.steps`` full-batch steps; raise ``TrainingError`` if the weight average
    does not reach ``min_accuracy`` on the held-out pairs."""
    torch.manual_seed(cfg.seed)
    model = _model(cfg).train()
    average = copy.deepcopy(model)
    tokens, answers = modular_addition_data(cfg.p)
    train_idx, _ = split(cfg)
    x, y = tokens[train_idx], answers[train_idx]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, cfg.beta2))
    start = time.perf_counter()
    for _ in range(cfg.steps):
        loss = torch.nn.functional.cross_entropy(model(x, logits_to_keep=1).logits[:, -1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for avg, cur in zip(average.parameters(), model.parameters()):
                avg.lerp_(cur, 1 - cfg.ema)
    trained = _trained(average, cfg, {"steps": cfg.steps, "seconds": time.perf_counter() - start})
    if trained.accuracy < min_accuracy:
        raise TrainingError(f"Modular addition reached held-out accuracy {trained.accuracy:.3f} < "
                            f"{min_accuracy} after {cfg.steps} steps; train longer (steps) or try another seed.")
    return trained


def save_trained(trained: Trained, name: str, directory: Path = DATA) -> Path:
    """Write the weights (safetensors) and the config (json) next to each other."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps({"config": trained.info["config"], "steps": trained.info["steps"]}, indent=2))
    return directory / f"{name}.safetensors"


def pretrained_modular_addition(name: str = PRETRAINED) -> Trained:
    """The model ``train_modular_addition(ModularAdditionConfig())`` trained here, as shipped."""
    meta_file = DATA / f"{name}.json"
    if not meta_file.is_file():
        raise InputError(f"No packaged model {name!r} in {DATA}; train one with train_modular_addition.")
    meta = json.loads(meta_file.read_text())
    cfg = ModularAdditionConfig(**meta["config"])
    model = _model(cfg)
    model.load_state_dict(load_file(str(DATA / f"{name}.safetensors")))
    return _trained(model, cfg, {"steps": meta["steps"], "seconds": 0.0})


@dataclass(frozen=True)
class FourierConcentration:
    frequencies: tuple[int, ...]  # the top-k frequencies, most power first
    fraction: float  # their share of the embedding's squared norm
    power: torch.Tensor  # [p // 2 + 1] share of every frequency (sums to 1)


def _p(trained: Trained) -> int:
    if "p" not in trained.info:
        raise ConfigError("This model has no modulus p: Fourier analysis needs a model from "
                          "train_modular_addition / pretrained_modular_addition.")
    return trained.info["p"]


def fourier_key_frequencies(trained: Trained, k: int) -> FourierConcentration:
    """Power of the embedding rows 0..p-1 per frequency of the real DFT over the token axis
    (Parseval: every frequency but 0 and p/2 counts twice); the ``k`` strongest and their share."""
    p = _p(trained)
    emb = trained.model.model.embed_tokens.weight[:p].detach().double()
    power = torch.fft.rfft(emb, dim=0).abs().pow(2).sum(1)
    power[1:] *= 2
    if p % 2 == 0:
        power[-1] /= 2
    power = power / power.sum()
    top = power.argsort(descending=True)[:k]
    return FourierConcentration(tuple(int(f) for f in top), float(power[top].sum()), power.float())


def fourier_basis(p: int, frequencies) -> torch.Tensor:
    """Orthonormal columns spanning cos / sin of the given frequencies over 0..p-1: [p, r]."""
    t = torch.arange(p, dtype=torch.float64)
    cols = []
    for f in frequencies:
        cols.append(torch.cos(2 * math.pi * f * t / p))
        if f != 0 and 2 * f != p:
            cols.append(torch.sin(2 * math.pi * f * t / p))
    q, _ = torch.linalg.qr(torch.stack(cols, 1))
    return q


def fourier_ablation_accuracy(trained: Trained, frequencies, keep: bool) -> float:
    """Accuracy on all p² pairs with the number embeddings projected onto (``keep``) or off the
    span of the given frequencies; the weights are restored afterwards."""
    p = _p(trained)
    weight = trained.model.model.embed_tokens.weight
    original = weight.detach().clone()
    q = fourier_basis(p, frequencies).to(weight.dtype)
    on = q @ (q.T @ original[:p])
    try:
        with torch.no_grad():
            weight[:p] = on if keep else original[:p] - on
        tokens, answers = modular_addition_data(p)
        return accuracy(trained.model, tokens, answers)
    finally:
        with torch.no_grad():
            weight.copy_(original)
