"""Shape-annotated tensor types of the stats layer (jaxtyping; DESIGN rule 4).

Samples go along dim 0 and the cells of a sweep (layers, positions, heads, ...) fill the rest.
Aliases rather than inline strings, so linters do not parse the shape strings as annotations.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float

Samples = Float[torch.Tensor, "n *cells"]
"""Per-sample values, one row per sample (prompt), any cell dims after."""
Cells = Float[torch.Tensor, "*cells"]
"""One value per cell."""
CellMask = Bool[torch.Tensor, "*cells"]
"""One flag per cell."""
Paired = Float[torch.Tensor, "*batch n"]
"""Paired observations along the last dim, optionally batched in front."""
PerBatch = Float[torch.Tensor, "*batch"]
"""One value per batch entry."""
Observations = Float[torch.Tensor, " n"]
"""A 1-D vector of observations."""
