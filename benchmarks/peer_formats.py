"""Cross-check of checkpoint formats against the real peers (needs `.venv-sae`: make bench-sae).

    .venv-sae/bin/python benchmarks/peer_formats.py

* interplab → SAELens: ``export_saelens`` for topk / relu / jumprelu / batchtopk, loaded by
  SAELens's own ``SAE.load_from_disk``; max |difference| of ``forward`` and ``encode``.
* SAELens → interplab: a SAELens TopK SAE saved by SAELens, read by ``load_dictionary``.
* sparsify → interplab: a sparsify ``SparseCoder`` saved by its ``save_to_disk``, read by
  ``load_dictionary``.
Prints one line per case; exits non-zero if any difference exceeds 1e-5.
"""

from __future__ import annotations

import sys
import tempfile
import warnings

import torch

from interplab.dictionary import DICTIONARIES, DictionaryConfig, export_saelens, load_dictionary


def main() -> int:
    warnings.filterwarnings("ignore")
    from sae_lens import SAE
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(0)
    x = torch.randn(64, 16)
    worst = 0.0
    for arch in ["topk", "relu", "jumprelu", "batchtopk"]:
        d = DICTIONARIES.get(arch)(DictionaryConfig(arch=arch, d_in=16, d_sae=64, k=4,
                                                    input_site="blocks.0.hook_resid_post"))
        with torch.no_grad():
            for p in d.parameters():
                p.add_(torch.randn_like(p) * 0.1)
            d.in_scale.fill_(0.5)
            d.out_scale.fill_(0.5)
        d.eval()
        path = tempfile.mkdtemp() + "/sae"
        export_saelens(d, path)
        s = SAE.load_from_disk(path, device="cpu")
        with torch.no_grad():
            diff = max(float((s(x) - d(x)).abs().max()), float((s.encode(x) - d.encode(x)).abs().max()))
        worst = max(worst, diff)
        print(f"interplab {arch:9s} → SAELens {type(s).__name__:12s} max|Δ| {diff:.2e}")

    s = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=16, d_sae=64, k=4, dtype="float32", device="cpu"))
    with torch.no_grad():
        for p in s.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tempfile.mkdtemp() + "/s"
    s.save_inference_model(path)
    ours = load_dictionary(path, input_site="x")
    with torch.no_grad():
        diff = float((SAE.load_from_disk(path, device="cpu")(x) - ours(x)).abs().max())
    worst = max(worst, diff)
    print(f"SAELens topk → interplab {ours.arch} max|Δ| {diff:.2e}")

    sp = SparseCoder(16, SparseCoderConfig(expansion_factor=4, k=4), device="cpu")
    with torch.no_grad():
        for p in sp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tempfile.mkdtemp() + "/sp"
    sp.save_to_disk(path)
    ours = load_dictionary(path, input_site="x")
    with torch.no_grad():
        diff = float((sp(x=x, y=x).sae_out - ours(x)).abs().max())
    worst = max(worst, diff)
    print(f"sparsify topk → interplab {ours.arch} max|Δ| {diff:.2e}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
