"""Other libraries' checkpoint layouts: SAELens 6.x export/import and sparsify 1.3 import.

``load_dictionary(path)`` recognises

* our format: ``config.json`` tagged ``interplab-dictionary/1`` (+ ``weights.safetensors``);
* SAELens (6.x, and pre-6 configs): ``cfg.json`` + ``sae_weights.safetensors`` holding
  ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_out]``, ``b_enc``, ``b_dec`` and, per architecture,
  ``threshold [d_sae]`` (jumprelu) or ``topk_threshold []`` (a batchtopk training save);
* EleutherAI sparsify: one directory per hookpoint with ``cfg.json`` (``d_in``, ``k``,
  ``num_latents`` / ``expansion_factor``, ``transcode``, ``skip_connection``, ...) and
  ``sae.safetensors`` holding ``encoder.weight [d_sae, d_in]``, ``encoder.bias``,
  ``W_dec [d_sae, d_in]``, ``b_dec`` and ``W_skip [d_out, d_in]`` (applied as ``x @ W_skip.T``)
  — as ``SparseCoder.save_to_disk`` writes it (``safetensors.torch.save_model``);

and returns one of our dictionaries whose ``forward``/``encode`` equal the source library's
inference formulas (float32, on ``device``). Every piece is mapped exactly, folding where the
parameterisations differ (SAELens ``apply_b_dec_to_input=False`` and
``rescale_acts_by_decoder_norm=True``). Foreign weights load as float32 whatever their stored
dtype; a SAELens ``reshape_activations="hook_z"`` dictionary takes the flattened
[n_heads * d_head] input. SAELens 6.x applies ``normalize_activations="expected_average_only_in"``
only while training, so such a checkpoint loads with unit scales, as SAELens runs it.

``export_saelens`` writes the SAELens 6.x inference layout. SAELens keeps weights in model
units, so our ``in_scale``/``out_scale`` are folded in (``normalize_activations="none"``); a
BatchTopK or Matryoshka dictionary is exported as ``jumprelu`` with θ in every latent, which is
what SAELens itself does when it saves a BatchTopK SAE for inference.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import Tensor

from interplab.core.artifacts import atomic_directory, load_finite_tensors, read_json, write_json
from interplab.core.errors import InterplabError, choices
from interplab.dictionary.base import DICTIONARIES, Dictionary, DictionaryConfig

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"

# our arch -> SAELens inference architecture (SAE, transcoder)
_TO_SAELENS = {
    "relu": ("standard", "transcoder"),
    "topk": ("topk", None),
    "batchtopk": ("jumprelu", "jumprelu_transcoder"),
    "matryoshka": ("jumprelu", "jumprelu_transcoder"),
    "jumprelu": ("jumprelu", "jumprelu_transcoder"),
}
# SAELens architecture -> ours
_FROM_SAELENS = {
    "standard": "relu",
    "topk": "topk",
    "batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
    "transcoder": "relu",
    "jumprelu_transcoder": "jumprelu",
}
_SAELENS_TRANSCODERS = {"transcoder", "jumprelu_transcoder"}


# -- export -----------------------------------------------------------------------------------
@torch.no_grad()
def model_unit_weights(d: Dictionary) -> dict[str, Tensor]:
    """W_enc, W_dec, b_enc, b_dec (and W_skip [d_out, d_in]) with the scales folded in.

    With s = in_scale, t = out_scale: SAELens computes (x - b_dec')W_enc' + b_enc' for an SAE and
    z W_dec' + b_dec'. Taking W_enc' = s W_enc, W_dec' = W_dec / t, b_dec' = b_dec / t and
    b_enc' = b_enc + (s b_dec' - b_dec) W_enc keeps every pre-activation identical, so
    thresholds and top-k choices are unchanged.
    """
    s, t = d.in_scale.float(), d.out_scale.float()
    w_enc, w_dec, b_enc, b_dec = (p.detach().float().cpu() for p in (d.W_enc, d.W_dec, d.b_enc, d.b_dec))
    s, t = s.cpu(), t.cpu()
    out = {"W_enc": w_enc * s, "W_dec": w_dec / t, "b_dec": b_dec / t, "b_enc": b_enc.clone()}
    if not d.is_transcoder:
        out["b_enc"] = b_enc + (s * out["b_dec"] - b_dec) @ w_enc
    if hasattr(d, "W_skip"):
        out["W_skip"] = (d.W_skip.detach().float().cpu() * (s / t)).T
    return {k: v.contiguous() for k, v in out.items()}


def _sae_lens_version() -> str:
    try:
        return metadata.version("sae-lens")
    except metadata.PackageNotFoundError:
        return "6.0.0"


@torch.no_grad()
def export_saelens(dictionary: Dictionary, path: str | Path, *, model_name: str | None = None,
                   overwrite: bool = False) -> Path:
    """Write ``dictionary`` as a SAELens 6.x directory (``cfg.json`` + ``sae_weights.safetensors``)."""
    d, path = dictionary, Path(path)
    pair = _TO_SAELENS.get(d.arch)
    arch = None if pair is None else pair[1 if d.is_transcoder else 0]
    if arch is None:
        kind = "transcoder" if d.is_transcoder else "SAE"
        raise InterplabError(
            f"SAELens 6.x has no architecture for a {d.arch!r} {kind} (its transcoders are ReLU or "
            f"JumpReLU, without TopK); keep it in our format (Dictionary.save). Exportable: "
            f"{choices(sorted(_TO_SAELENS))} (SAEs), relu/jumprelu/batchtopk/matryoshka (transcoders)."
        )
    if hasattr(d, "W_skip"):
        raise InterplabError(f"A {d.arch!r} has a skip path that SAELens's {arch!r} cannot hold.")
    tensors = model_unit_weights(d)
    if arch.startswith("jumprelu"):
        thr = d.threshold.detach().float().cpu()
        tensors["threshold"] = (thr * torch.ones(d.cfg.d_sae)).contiguous()
    version = _sae_lens_version()
    cfg = {
        "architecture": arch,
        "d_in": d.cfg.d_in,
        "d_sae": d.cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": not d.is_transcoder,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": version,
            "sae_lens_training_version": version,
            "hook_name": d.cfg.input_site or None,
            "model_name": model_name,
            "exported_from": f"interplab {d.arch}",
        },
    }
    if arch == "topk":
        cfg.update(k=d.cfg.k, rescale_acts_by_decoder_norm=False)
    if d.is_transcoder:
        cfg["d_out"] = d.cfg.width_out
        cfg["metadata"]["hook_name_out"] = d.cfg.target_site or None
    with atomic_directory(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp / SAELENS_WEIGHTS))
        write_json(tmp / SAELENS_CFG, cfg)
    return path


# -- import -----------------------------------------------------------------------------------
def load_dictionary(path: str | Path, *, input_site: str | None = None, output_site: str | None = None,
                    device: str | torch.device = "cpu") -> Dictionary:
    """Load our, a SAELens or a sparsify checkpoint directory as one of our dictionaries.

    ``input_site``/``output_site`` override the sites recorded in (or guessed for) a foreign
    checkpoint; our own checkpoints keep theirs.
    """
    path = Path(path)
    if not path.is_dir():
        raise InterplabError(f"{path} is not a directory; a dictionary checkpoint is a directory.")
    names = sorted(p.name for p in path.iterdir())
    if "config.json" in names:
        return Dictionary.load(path, device=device)
    if SAELENS_CFG in names and SAELENS_WEIGHTS in names:
        model = _load_saelens(path, input_site, output_site)
    elif SPARSIFY_CFG in names and SPARSIFY_WEIGHTS in names:
        model = _load_sparsify(path, input_site, output_site)
    else:
        hookpoints = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / SPARSIFY_CFG).is_file())
        if hookpoints:
            raise InterplabError(
                f"{path} holds several checkpoints, one per hookpoint ({choices(hookpoints)}); "
                f"pass one of them, e.g. {path / hookpoints[0]}."
            )
        raise InterplabError(
            f"{path} is not a dictionary checkpoint I recognise: found {names or 'nothing'}. Expected "
            f"config.json (interplab), {SAELENS_CFG} + {SAELENS_WEIGHTS} (SAELens) or "
            f"{SPARSIFY_CFG} + {SPARSIFY_WEIGHTS} (sparsify)."
        )
    return model.to(device)


def _require(tensors: dict[str, Tensor], keys: list[str], where: Path) -> None:
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise InterplabError(f"{where} lacks tensors {missing}; found {sorted(tensors)}.")


@torch.no_grad()
def _fill(model: Dictionary, tensors: dict[str, Tensor], where: Path) -> Dictionary:
    """Copy ``tensors`` (our names) into ``model``, checking that every shape fits."""
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, value in tensors.items():
        if own[name].shape != value.shape:
            raise InterplabError(
                f"{where}: tensor {name} has shape {tuple(value.shape)} but a {model.arch!r} dictionary "
                f"with d_in={model.cfg.d_in}, d_sae={model.cfg.d_sae}, d_out={model.cfg.width_out} "
                f"needs {tuple(own[name].shape)}."
            )
        own[name].copy_(value.to(own[name].dtype))
    return model


def _load_saelens(path: Path, input_site: str | None, output_site: str | None) -> Dictionary:
    cfg = read_json(path / SAELENS_CFG)
    meta = cfg.get("metadata") or {}
    arch = cfg.get("architecture")
    k = cfg.get("k")
    if arch is None:  # pre-6.0 config: the activation function decides
        act = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
        if act == "topk":
            arch, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k")
        elif act == "relu":
            arch = "standard"
        else:
            raise InterplabError(f"{path}/{SAELENS_CFG}: pre-6.0 SAELens activation {act!r} is not supported.")
    if arch not in _FROM_SAELENS:
        raise InterplabError(
            f"{path} is a SAELens {arch!r} checkpoint, which interplab cannot load; supported "
            f"SAELens architectures: {choices(sorted(_FROM_SAELENS))}."
        )
    norm = cfg.get("normalize_activations", "none")
    norm = {False: "none", True: "expected_average_only_in"}.get(norm, norm)
    # SAELens 6.x applies "expected_average_only_in" only while training; inference is identity.
    if norm not in ("none", "expected_average_only_in"):
        raise InterplabError(
            f"{path}: SAELens normalize_activations={norm!r} changes activations at inference and is not "
            "supported; fold it into the weights first (supported: 'none', 'expected_average_only_in')."
        )
    if cfg.get("finetuning_scaling_factor"):
        raise InterplabError(f"{path}: SAELens finetuning_scaling_factor is not supported.")
    w = load_finite_tensors(path / SAELENS_WEIGHTS)
    _require(w, ["W_enc", "W_dec", "b_enc", "b_dec"], path)
    w_enc, w_dec, b_enc, b_dec = (w[n].float() for n in ("W_enc", "W_dec", "b_enc", "b_dec"))
    d_in, d_sae = w_enc.shape
    d_out = w_dec.shape[1]
    transcoder = arch in _SAELENS_TRANSCODERS
    if not transcoder and not cfg.get("apply_b_dec_to_input", True):
        b_enc = b_enc + b_dec @ w_enc  # we always centre an SAE's input by b_dec; undo it in b_enc
    if arch in ("topk", "batchtopk") and cfg.get("rescale_acts_by_decoder_norm", False):
        # SAELens scales pre-activations by ||W_dec[i]|| and divides it out in decode: fold it.
        n = w_dec.norm(dim=-1).clamp_min(1e-8)
        w_enc, b_enc, w_dec = w_enc * n, b_enc * n, w_dec / n[:, None]
    hook = input_site or meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or ""
    out_site = ""
    if transcoder:
        hook = hook or "saelens:input"
        out_site = output_site or meta.get("hook_name_out") or f"{hook}:output"
    ours = _FROM_SAELENS[arch]
    dcfg = DictionaryConfig(
        arch=ours, d_in=d_in, d_sae=d_sae, d_out=d_out if transcoder else 0,
        k=max(1, min(d_sae, round(k or 32))), input_site=hook, output_site=out_site, normalize=False,
    )
    if not transcoder and d_out != d_in:
        raise InterplabError(f"{path}: SAELens {arch!r} has W_dec [{d_sae}, {d_out}] but d_in={d_in}.")
    model = _construct(dcfg)
    tensors = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": b_dec}
    if ours == "jumprelu":
        _require(w, ["threshold"], path)
        tensors["log_threshold"] = w["threshold"].float().clamp_min(0).log()
    if ours == "batchtopk":
        _require(w, ["topk_threshold"], path)
        tensors["threshold"] = w["topk_threshold"].float().reshape(())
        tensors["threshold_updates"] = torch.ones((), dtype=torch.long)
    return _fill(model, tensors, path)


def _load_sparsify(path: Path, input_site: str | None, output_site: str | None) -> Dictionary:
    cfg = read_json(path / SPARSIFY_CFG)
    if "d_in" not in cfg:
        raise InterplabError(f"{path}/{SPARSIFY_CFG} has no d_in, so it is not a sparsify config: keys {sorted(cfg)}.")
    if cfg.get("activation", "topk") != "topk":
        raise InterplabError(f"{path}: sparsify activation {cfg['activation']!r} is not supported (only 'topk').")
    transcode, skip = bool(cfg.get("transcode", False)), bool(cfg.get("skip_connection", False))
    if skip and not transcode:
        raise InterplabError(f"{path}: a sparsify SAE with skip_connection (not a transcoder) is not supported.")
    w = load_finite_tensors(path / SPARSIFY_WEIGHTS)
    _require(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec", *(["W_skip"] if skip else [])], path)
    d_in = int(cfg["d_in"])
    d_sae = int(cfg.get("num_latents") or d_in * int(cfg.get("expansion_factor", 32)))
    d_out = w["W_dec"].shape[1]
    hook = path.name
    arch = "skip_transcoder" if skip else "transcoder" if transcode else "topk"
    dcfg = DictionaryConfig(
        arch=arch, d_in=d_in, d_sae=d_sae, d_out=d_out if transcode else 0, k=int(cfg.get("k", 32)),
        input_site=input_site or (f"{hook}:input" if transcode else hook),
        output_site=(output_site or f"{hook}:output") if transcode else "", normalize=False,
    )
    model = _construct(dcfg)
    tensors = {"W_enc": w["encoder.weight"].float().T, "b_enc": w["encoder.bias"].float(),
               "W_dec": w["W_dec"].float(), "b_dec": w["b_dec"].float()}
    if skip:
        tensors["W_skip"] = w["W_skip"].float().T  # sparsify adds x @ W_skip.T; ours adds x @ W_skip
    return _fill(model, tensors, path)


def _construct(cfg: DictionaryConfig) -> Dictionary:
    return DICTIONARIES.get(cfg.arch)(cfg)
