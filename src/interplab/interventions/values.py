"""The numbers in an intervention spec, checked where the spec is built: indices are integers
(not ``"12"``, which would read as positions 1 and 2, nor ``1.5`` or NaN), tensors and scales
are finite (a NaN vector or scale, or one NaN in a patched value, silently makes every logit
downstream NaN), and JSON-encoded tensors decode or say why not. Each error names the field."""

from __future__ import annotations

import json
import math
import numbers
import operator

import torch

from interplab.core.errors import InterventionError, choices


def as_index(v, what: str) -> int:
    """An integer index (ints, numpy / torch integers, integral floats from JSON); else an error."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if not isinstance(v, bool):
        try:
            return operator.index(v)
        except TypeError:
            if isinstance(v, float) and v.is_integer():
                return int(v)
    raise InterventionError(f"{what} must be integers, got {v!r}.")


def as_indices(x, what: str):
    if x is None:
        return None
    if isinstance(x, (str, bytes, dict)) or not hasattr(x, "__iter__") or getattr(x, "ndim", 1) == 0:
        return (as_index(x, what),)
    return tuple(as_index(v, what) for v in x)


def finite_tensor(value, what: str) -> torch.Tensor:
    """``value`` as a tensor (float32 unless it is one already), refusing NaN and infinities:
    a NaN here would silently turn every logit downstream into NaN."""
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InterventionError(f"{what} must be a tensor or a (nested) list of numbers: {e}") from None
    if value.is_floating_point() or value.is_complex():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            raise InterventionError(
                f"{what} has {int(bad.sum())} non-finite entries (NaN or infinity) of {value.numel()}; "
                "an intervention must be finite. Check how the tensor was computed or loaded.")
    return value


def spec_dict(data) -> dict:
    """A copy of one intervention's JSON object (which must be an object)."""
    if not isinstance(data, dict):
        raise InterventionError(f"An intervention is a JSON object with an 'op', got {type(data).__name__}: "
                                f"{data!r:.80}.")
    return dict(data)


def parse_json(text: str):
    """JSON text (``NaN`` / ``Infinity`` literals are read, then refused as values)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InterventionError(f"Interventions JSON is not valid JSON: {e.msg} at line {e.lineno}, "
                                f"column {e.colno}.") from None


TENSOR_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")


def decode_tensor(enc: dict, what: str) -> torch.Tensor:
    """``{"shape": [...], "dtype": "float32", "data": [...]}`` (as ``to_dict`` writes it)."""
    dtype = enc.get("dtype", "float32")
    if dtype not in TENSOR_DTYPES:
        raise InterventionError(f"{what}: dtype {dtype!r} is not one of {choices(TENSOR_DTYPES)}.")
    if "data" not in enc or "shape" not in enc:
        raise InterventionError(f"{what}: an encoded tensor needs 'shape' and 'data' (and optionally 'dtype').")
    try:
        return torch.tensor(enc["data"], dtype=getattr(torch, dtype)).reshape(enc["shape"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise InterventionError(f"{what}: cannot build a tensor of shape {enc['shape']!r} from its data: {e}") from None


def finite_scale(scale, what: str) -> None:
    """A real number (or a one-element tensor) that is finite."""
    if isinstance(scale, torch.Tensor) and scale.numel() == 1:
        finite = bool(torch.isfinite(scale))
    elif isinstance(scale, numbers.Real) and not isinstance(scale, bool):
        finite = math.isfinite(scale)
    else:
        raise InterventionError(f"{what} must be a number, got {scale!r}.")
    if not finite:
        raise InterventionError(f"{what} is {float(scale)}; it must be a finite number.")
