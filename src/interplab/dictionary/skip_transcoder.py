"""Skip transcoder (Paulo, Shabalin & Belrose 2025, "Transcoders Beat Sparse Autoencoders for
Interpretability").

A TopK transcoder plus a linear skip path ``x W_skip`` ([d_in, d_out], initialised to zeros)
added to the reconstruction through the base's ``skip`` hook, so the sparse latents only need to
explain what a linear map of the input cannot.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from interplab.dictionary.base import DictionaryConfig, register_dictionary
from interplab.dictionary.transcoder import Transcoder


@register_dictionary("skip_transcoder")
class SkipTranscoder(Transcoder):
    """target ≈ TopK-transcoder(x) + x W_skip."""

    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__(cfg)
        self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.width_out))

    def skip(self, x_n: Tensor) -> Tensor:
        return x_n @ self.W_skip
