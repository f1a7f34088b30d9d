"""Shape-annotated tensor types shared by the public API (jaxtyping; DESIGN rule 4), named with
the one vocabulary of dimension names (``core.dims``). Aliases rather than inline strings, so
linters do not parse the shape strings as annotations."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int

AnswerIds = Int[torch.Tensor, " prompt"]
"""One token id per prompt (the answer, or the wrong answer a logit difference is taken to)."""
PerPrompt = Float[torch.Tensor, " prompt"]
"""One value per prompt (a metric on the clean or corrupt run)."""
Effects = Float[torch.Tensor, "prompt *cells"]
"""One value per prompt and cell of a sweep (layer, position, head, ...)."""
