"""Matryoshka sparse autoencoder (Bussmann et al. 2025, "Learning Multi-Level Features with
Matryoshka Sparse Autoencoders"; Nabeshima 2024, "Matryoshka Sparse Autoencoders").

Latents are BatchTopK (training) / a global threshold (inference), as in ``batchtopk``. The
loss sums the reconstruction error of every nested prefix: for each m in
``cfg.matryoshka_prefixes`` (default ``[d_sae//16, d_sae//4]``) and finally ``d_sae``, the
squared error of ``z[:, :m] @ W_dec[:m] + b_dec`` (the full-width term is the base's "mse",
the others are "mse_<m>"). Early latents must reconstruct on their own, so they learn general
features and later ones refine them, which reduces feature absorption. AuxK from TopKFamily.
"""

from __future__ import annotations

from itertools import pairwise

from torch import Tensor

from interplab.core.errors import ConfigError
from interplab.dictionary.base import DictionaryConfig, StepOutput, register_dictionary
from interplab.dictionary.batchtopk import BatchTopK


def matryoshka_prefixes(cfg: DictionaryConfig) -> list[int]:
    """The nested prefix sizes, ending with d_sae; raises ConfigError for a bad list."""
    given = list(cfg.matryoshka_prefixes)
    if not given:
        given = sorted({m for m in (cfg.d_sae // 16, cfg.d_sae // 4) if m > 0})
    if any(not isinstance(m, int) or isinstance(m, bool) or m <= 0 for m in given):
        raise ConfigError(f"matryoshka_prefixes must be positive integers, got {given}.")
    if any(b <= a for a, b in pairwise(given)):
        raise ConfigError(f"matryoshka_prefixes must be strictly ascending, got {given}.")
    if given and given[-1] >= cfg.d_sae:
        raise ConfigError(
            f"matryoshka_prefixes must all be < d_sae={cfg.d_sae} (d_sae itself is always the last "
            f"prefix), got {given}."
        )
    return [*given, cfg.d_sae]


@register_dictionary("matryoshka")
class Matryoshka(BatchTopK):
    """Matryoshka BatchTopK SAE: the loss sums the error of each nested prefix of latents."""

    def check_config(self, cfg: DictionaryConfig) -> None:
        super().check_config(cfg)
        matryoshka_prefixes(cfg)

    @property
    def prefixes(self) -> list[int]:
        return matryoshka_prefixes(self.cfg)

    def training_step(self, x: Tensor, target: Tensor | None = None) -> StepOutput:
        out = super().training_step(x, target)
        t_n = (x if target is None else target).to(self.W_enc.dtype) * self.out_scale
        x_n = self._in(x)
        skip = self.skip(x_n)
        loss = out.loss
        for m in self.prefixes[:-1]:
            recon = out.latents[:, :m] @ self.W_dec[:m] + self.b_dec + skip
            term = (recon - t_n).pow(2).sum(-1).mean()
            out.parts[f"mse_{m}"] = term
            loss = loss + term
        out.loss = loss
        return out
