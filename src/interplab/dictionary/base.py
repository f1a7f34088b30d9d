"""The one interface every sparse dictionary shares (SAEs, transcoders, skip transcoders).

A dictionary maps an activation ``x`` (``d_in``, read at ``input_site``) to sparse latents
``z`` (``d_sae``) and back to a reconstruction of a target (``d_out``, at ``output_site``; the
same site for an SAE, another for a transcoder). Inputs are scaled by ``in_scale`` and targets
by ``out_scale`` inside the dictionary (the scales are buffers, saved with the weights), so
callers always pass and receive activations in the model's own units.

Subclasses register with ``@register_dictionary("name")`` and implement ``activation`` (the
inference non-linearity) and, where training differs, ``train_latents`` and ``sparsity_loss``.
Everything a resumed training run needs (weights, scales, per-latent firing counters) lives in
the state dict, so ``save``/``load`` round-trip it exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interplab.core.artifacts import load_artifact_tensors, read_json, write_artifact
from interplab.core.config import param
from interplab.core.errors import ConfigError, InterplabError
from interplab.core.registry import Registry

FORMAT = "interplab-dictionary/1"
_REPAIR = "Re-run the train-sae that wrote it (it resumes from its last checkpoint, writing it again) or restore a copy."

DICTIONARIES: Registry[type[Dictionary]] = Registry("dictionary architecture")


def register_dictionary(name: str):
    """Class decorator: register a ``Dictionary`` subclass under ``name`` (sets ``arch``)."""

    def decorate(cls):
        cls.arch = name
        return DICTIONARIES.register(name)(cls)

    return decorate


@dataclass(frozen=True)
class DictionaryConfig:
    """Shape and hyper-parameters of one dictionary; fields an architecture does not use are ignored."""

    arch: str = param("topk", help="Architecture: a registered dictionary name (topk, batchtopk, relu, jumprelu, matryoshka, transcoder, skip_transcoder).")
    d_in: int = param(0, help="Width of the input activation.")
    d_sae: int = param(0, help="Number of latents.")
    d_out: int = param(0, help="Width of the reconstruction target; 0 means d_in.")
    k: int = param(32, help="Active latents per token (topk, batchtopk, matryoshka, transcoders).")
    aux_k: int = param(0, help="Dead latents used by the AuxK loss; 0 means d_in // 2 (Gao et al. 2024).")
    aux_coeff: float = param(1 / 32, help="Weight of the AuxK loss (Gao et al. 2024 use 1/32).")
    dead_after_tokens: int = param(10_000_000, help="A latent that has not fired for this many training tokens counts as dead.")
    l1_coeff: float = param(5.0, help="L1 coefficient (relu): the penalty is sum |z_i| * ||W_dec[i]||.")
    jumprelu_threshold: float = param(0.001, help="Initial JumpReLU threshold (in normalised units).")
    jumprelu_bandwidth: float = param(0.001, help="Bandwidth of the straight-through estimator's kernel (Rajamanoharan et al. 2024).")
    l0_coeff: float = param(1.0, help="Weight of the L0 penalty (jumprelu).")
    threshold_lr: float = param(0.01, help="EMA rate of the global inference threshold (batchtopk, matryoshka); the first training batch sets it directly.")
    matryoshka_prefixes: list = param([], help="Nested prefix sizes of a Matryoshka dictionary (ascending, the last < d_sae); empty means [d_sae//16, d_sae//4].")  # noqa: RUF009
    input_site: str = param("", help="Site the input is read at, e.g. L15.resid_post.")
    output_site: str = param("", help="Site the target is read at; empty means input_site (an SAE).")
    normalize: bool = param(True, help="Scale inputs (and targets) so their mean squared norm is their width; the scales are stored with the dictionary.")

    def __post_init__(self) -> None:
        if self.d_in <= 0 or self.d_sae <= 0:
            raise ConfigError(f"d_in and d_sae must be positive (got d_in={self.d_in}, d_sae={self.d_sae}).")
        if self.d_out < 0:
            raise ConfigError(f"d_out must be >= 0 (0 means d_in), got {self.d_out}.")
        if self.k <= 0:
            raise ConfigError(f"k must be positive, got {self.k}.")
        if self.aux_k < 0 or self.dead_after_tokens <= 0:
            raise ConfigError("aux_k must be >= 0 and dead_after_tokens > 0.")
        if not 0.0 < self.threshold_lr <= 1.0:
            raise ConfigError(f"threshold_lr must be in (0, 1], got {self.threshold_lr}.")

    @property
    def width_out(self) -> int:
        return self.d_out or self.d_in

    @property
    def target_site(self) -> str:
        return self.output_site or self.input_site

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> DictionaryConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown dictionary config keys {unknown}; known: {sorted(known)}.")
        return cls(**data)


@dataclass
class StepOutput:
    """One training step's loss, its named parts (floats for logging) and the latents."""

    loss: Tensor
    parts: dict[str, Tensor]
    latents: Float[Tensor, "batch d_sae"] | None  # None on the sparse TopK path (sparse_ops)
    recon: Float[Tensor, "batch d_out"]  # in normalised units
    fired: Tensor | None = None  # [d_sae] bool: latents active on any token of the batch

    def __post_init__(self) -> None:
        if self.fired is None and self.latents is not None:
            self.fired = (self.latents != 0).any(0)


class Dictionary(nn.Module):
    """Base class; see the module docstring."""

    arch: ClassVar[str] = ""
    #: Whether training keeps decoder rows at unit norm (``normalize_decoder`` /
    #: ``remove_parallel_grad``); False where the sparsity penalty already weighs by the norm (relu).
    unit_norm_decoder: ClassVar[bool] = True

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__()
        if self.arch and cfg.arch != self.arch:
            raise ConfigError(f"Config says arch={cfg.arch!r} but this class is {self.arch!r}.")
        self.cfg = cfg
        self.check_config(cfg)
        d_in, d_sae, d_out = cfg.d_in, cfg.d_sae, cfg.width_out
        g = torch.Generator().manual_seed(0)
        w_dec = torch.randn(d_sae, d_out, generator=g)
        w_dec /= w_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder initialised as the decoder's transpose where shapes allow (Gao et al. 2024).
        w_enc = w_dec.T.clone() if d_out == d_in else torch.randn(d_in, d_sae, generator=g) / d_in**0.5
        self.W_enc = nn.Parameter(w_enc.contiguous())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        self.register_buffer("in_scale", torch.ones(()))
        self.register_buffer("out_scale", torch.ones(()))
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))

    # -- to override ------------------------------------------------------------------------
    def check_config(self, cfg: DictionaryConfig) -> None:
        """Raise ConfigError for hyper-parameters this architecture cannot use."""

    def activation(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        raise NotImplementedError

    def train_latents(self, pre: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_sae"]:
        """Latents during training (BatchTopK and JumpReLU differ from inference)."""
        return self.activation(pre)

    def sparsity_loss(self, pre: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Extra loss terms (L1, L0, ...), each a scalar already multiplied by its coefficient."""
        return {}

    def skip(self, x_n: Float[Tensor, "batch d_in"]) -> Tensor | float:
        """Linear skip path from the (normalised) input to the target (skip transcoders)."""
        return 0.0

    # -- shared -----------------------------------------------------------------------------
    @property
    def is_transcoder(self) -> bool:
        return self.cfg.target_site != self.cfg.input_site or self.cfg.width_out != self.cfg.d_in

    def pre_acts(self, x_n: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Encoder pre-activations of a normalised input (an SAE subtracts b_dec first)."""
        if not self.is_transcoder:
            x_n = x_n - self.b_dec
        return x_n @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
        """Latents of a raw (model-unit) input."""
        return self.activation(self.pre_acts(self._in(x)))

    def decode(self, z: Float[Tensor, "batch d_sae"]) -> Float[Tensor, "batch d_out"]:
        """Reconstruction in model units from latents (without any skip path)."""
        return (z @ self.W_dec + self.b_dec) / self.out_scale

    def forward(self, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_out"]:
        """Reconstruction of the target, in model units, from a raw input."""
        x_n = self._in(x)
        z = self.activation(self.pre_acts(x_n))
        return (z @ self.W_dec + self.b_dec + self.skip(x_n)) / self.out_scale

    def _in(self, x: Tensor) -> Tensor:
        return x.to(self.W_enc.dtype) * self.in_scale

    def training_step(self, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_out"] | None = None) -> StepOutput:
        """Loss on one batch (raw units in; everything inside in normalised units).

        The reconstruction term is the squared error summed over features, averaged over
        tokens. Architectures add their sparsity terms; TopK-style ones add AuxK.
        """
        target = x if target is None else target
        x_n = self._in(x)
        t_n = target.to(self.W_enc.dtype) * self.out_scale
        pre = self.pre_acts(x_n)
        z = self.train_latents(pre)
        recon = z @ self.W_dec + self.b_dec + self.skip(x_n)
        err = recon - t_n
        mse = err.pow(2).sum(-1).mean()
        parts = {"mse": mse, **self.sparsity_loss(pre, z), **self.aux_loss(pre, z, err)}
        loss = sum(parts.values())
        with torch.no_grad():
            var = (t_n - t_n.mean(0)).pow(2).sum(-1).mean()
            parts["fvu"] = mse.detach() / var.clamp_min(1e-12)
            parts["l0"] = (z != 0).sum(-1).float().mean()
        return StepOutput(loss, parts, z, recon)

    def aux_loss(self, pre: Tensor, z: Tensor, err: Tensor) -> dict[str, Tensor]:
        """Dead-latent auxiliary loss; none by default (TopK family overrides)."""
        return {}

    @torch.no_grad()
    def update_firing(self, z: Tensor | None = None, *, fired: Tensor | None = None,
                      n_tokens: int | None = None) -> None:
        """Advance each latent's tokens-since-last-fired counter by this batch (resets on firing).

        Pass the latents ``z`` [batch, d_sae], or a ``fired`` mask [d_sae] with ``n_tokens``
        (what the sparse TopK path gives: ``StepOutput.fired``).
        """
        if z is not None:
            fired, n_tokens = (z != 0).any(0), z.shape[0]
        if fired is None or n_tokens is None:
            raise TypeError("update_firing needs z, or both fired and n_tokens.")
        self.tokens_since_fired += n_tokens
        self.tokens_since_fired[fired] = 0

    def dead_mask(self) -> Tensor:
        return self.tokens_since_fired >= self.cfg.dead_after_tokens

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale decoder rows to unit norm (compensating the encoder column so the map is kept)."""
        norms = self.W_dec.norm(dim=-1).clamp_min(1e-8)
        self.W_dec /= norms[:, None]
        self.W_enc *= norms[None, :]
        self.b_enc *= norms

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the part of W_dec's gradient along each (unit) row, so steps keep the norm (Gao et al. 2024)."""
        if self.W_dec.grad is None:
            return
        w = self.W_dec / self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        self.W_dec.grad -= (self.W_dec.grad * w).sum(-1, keepdim=True) * w

    # -- artifacts --------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False, **provenance_extra) -> Path:
        """Write ``config.json`` + ``weights.safetensors`` + ``provenance.json`` atomically."""
        return write_artifact(path, {"format": FORMAT, "arch": self.arch, "config": self.cfg.to_json()},
                              self.state_dict(), "weights.safetensors", overwrite, **provenance_extra)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Dictionary:
        """Load a dictionary saved by ``save``; the class must match the stored architecture."""
        path = Path(path)
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise InterplabError(
                f"{path} is not an interplab dictionary directory (no config.json); for SAELens or "
                "sparsify checkpoints use interplab.dictionary.load_dictionary."
            )
        meta = read_json(cfg_file, fix=_REPAIR)
        if meta.get("format") != FORMAT:
            raise InterplabError(
                f"{path}/config.json is not an interplab dictionary (format {meta.get('format')!r}); "
                "for SAELens or sparsify checkpoints use interplab.dictionary.load_dictionary."
            )
        arch = meta.get("arch")
        cfg_json = meta.get("config") or {}
        if arch is None or cfg_json.get("arch", arch) != arch:
            raise InterplabError(
                f"{path}/config.json is inconsistent: arch {arch!r} but config.arch {cfg_json.get('arch')!r}; "
                "the checkpoint was edited or written by something else."
            )
        target = DICTIONARIES.get(arch)
        if cls is not Dictionary and cls is not target:
            raise InterplabError(
                f"{path} holds a {arch!r} dictionary, not {cls.arch!r}; load it with "
                f"Dictionary.load (which picks the stored architecture)."
            )
        model = target(DictionaryConfig.from_json(cfg_json))
        if not (path / "weights.safetensors").is_file():
            raise InterplabError(f"{path} has a config.json but no weights.safetensors; the save did not finish.")
        # Hash-checked, and NaN / inf refused (-inf is a JumpReLU log-threshold of 0).
        state = load_artifact_tensors(path, "weights.safetensors", fix=_REPAIR, neg_inf_ok=("log_threshold",))
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:  # size mismatches
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            raise InterplabError(
                f"{path}: weight shapes {shapes} do not fit a {arch!r} dictionary with d_in={model.cfg.d_in}, "
                f"d_sae={model.cfg.d_sae}, d_out={model.cfg.width_out} ({e})."
            ) from e
        if missing or unexpected:
            raise InterplabError(
                f"{path}: weights do not match a {arch!r} dictionary (missing {missing}, unexpected {unexpected})."
            )
        return model.to(device)
