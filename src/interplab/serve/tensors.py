"""Tensors in request and response bodies: three encodings in, two out.

In: a plain (nested) list of numbers; ``{"shape": [...], "dtype": "float32", "data": [...]}``
(flat data, as ``Intervention.to_dict`` writes it); or ``{"safetensors_b64": "..."}``, one tensor
in a base64 safetensors blob, read with ``safetensors.torch.load`` (a format with no code in it:
never pickle). Out: the ``shape``/``dtype``/``data`` form, or ``{"safetensors_b64": ...}``
holding one tensor named ``"tensor"``.
"""

from __future__ import annotations

import base64
import binascii

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from interplab.core.errors import InputError, InterplabError
from interplab.interventions.values import decode_tensor, finite_tensor

FORMATS = ("json", "safetensors_b64")


def decode_value(value, where: str) -> torch.Tensor:
    """A tensor from any of the three input encodings; errors name ``where``."""
    if isinstance(value, dict):
        if "safetensors_b64" in value:
            extra = sorted(set(value) - {"safetensors_b64"})
            if extra:
                raise InputError(f"{where}: a safetensors_b64 tensor has no other keys; got {extra}.")
            return _from_b64(value["safetensors_b64"], where)
        try:
            return finite_tensor(decode_tensor(value, where), where)
        except InterplabError as e:
            raise InputError(str(e)) from None
    if isinstance(value, (list, int, float)) and not isinstance(value, bool):
        try:
            return finite_tensor(value, where)
        except InterplabError as e:
            raise InputError(str(e)) from None
    raise InputError(f"{where}: a tensor is a list of numbers, {{\"shape\", \"dtype\", \"data\"}} or "
                     f"{{\"safetensors_b64\": ...}}; got {type(value).__name__}.")


def _from_b64(text, where: str) -> torch.Tensor:
    if not isinstance(text, str):
        raise InputError(f"{where}.safetensors_b64 must be a base64 string, got {type(text).__name__}.")
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InputError(f"{where}.safetensors_b64 is not valid base64: {e}.") from None
    try:
        tensors = load_safetensors(blob)
    except Exception as e:  # the parser's own error types vary by version; none runs code
        raise InputError(f"{where}.safetensors_b64 is not a safetensors file: {e}.") from None
    if len(tensors) != 1:
        raise InputError(f"{where}.safetensors_b64 must hold exactly one tensor; it holds "
                         f"{len(tensors)}: {sorted(tensors)}.")
    (tensor,) = tensors.values()
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{where}.safetensors_b64: dtype {tensor.dtype} is not a number type we take.")
    return finite_tensor(tensor.clone(), where)


def encode(tensor: torch.Tensor, fmt: str = "json") -> dict:
    """``tensor`` as ``{"shape", "dtype", "data"}`` (float32, flat) or ``{"safetensors_b64"}``."""
    tensor = tensor.detach().float().cpu().contiguous()
    if fmt == "safetensors_b64":
        return {"safetensors_b64": base64.b64encode(save_safetensors({"tensor": tensor})).decode("ascii")}
    return {"shape": list(tensor.shape), "dtype": "float32", "data": tensor.flatten().tolist()}


def b64_tensor(tensor: torch.Tensor) -> str:
    """One tensor as the base64 safetensors string requests may carry (for clients and tests)."""
    return encode(tensor, "safetensors_b64")["safetensors_b64"]
