"""TopK transcoder (Dunefsky, Chlenski & Nanda 2024, "Transcoders Find Interpretable LLM
Feature Circuits"; TopK latents after Gao et al. 2024).

Reads its input at ``cfg.input_site`` (e.g. ``L5.resid_mid``) and reconstructs the target at
``cfg.output_site`` (e.g. ``L5.mlp_out``), so it replaces a component rather than an
activation; ``d_out`` may differ from ``d_in``. Because input and target differ, the input is
not centred by ``b_dec`` (the base does this via ``is_transcoder``). AuxK from TopKFamily.
"""

from __future__ import annotations

from torch import Tensor

from interplab.core.errors import ConfigError
from interplab.dictionary.base import DictionaryConfig, register_dictionary
from interplab.dictionary.topk import TopKFamily, topk_relu


@register_dictionary("transcoder")
class Transcoder(TopKFamily):
    """z = TopK_k(ReLU(W_enc x + b_enc)); target ≈ z W_dec + b_dec."""

    def check_config(self, cfg: DictionaryConfig) -> None:
        super().check_config(cfg)
        if not cfg.input_site or not cfg.output_site:
            raise ConfigError(
                f"A {self.arch} needs both input_site and output_site (got input_site={cfg.input_site!r}, "
                f"output_site={cfg.output_site!r}), e.g. input_site='L5.resid_mid', output_site='L5.mlp_out'."
            )
        if cfg.output_site == cfg.input_site and cfg.width_out == cfg.d_in:
            raise ConfigError(
                f"A {self.arch} maps one site to another, but input_site and output_site are both "
                f"{cfg.input_site!r} with d_out == d_in; for a dictionary of one site use an SAE "
                "(topk, batchtopk, ...)."
            )

    def activation(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.cfg.k)
