"""Export ``FeatureStats`` as the dashboard batches that Neuronpedia imports.

The format is SAEDashboard's Neuronpedia output, read (not copied) from jbloomAus/SAEDashboard at
commit db4839a: ``sae_dashboard/neuronpedia/neuronpedia_dashboard.py`` (the ``to_dict`` of
``NeuronpediaDashboardBatch``, ``NeuronpediaDashboardFeature`` and
``NeuronpediaDashboardActivation`` give the keys), ``neuronpedia_converter.py`` and
``sequence_data_generator.py`` (what goes in them), ``neuronpedia_runner.py`` (the files are
``batch-<n>.json``). Neuronpedia's importer, ``utils/neuronpedia-utils/neuronpedia_utils/
convert-saedashboard-to-neuronpedia-export.py`` in hijohnnylin/neuronpedia (read in the
zazer0/neuronpedia copy, commit 4d6d6c6), reads every key below and requires ``sae_id_suffix``
and each activation's ``qualifying_token_index``; it derives ``maxValue``,
``maxValueTokenIndex`` and ``minValue`` from ``values`` itself.

``out_dir/batch-<n>.json``, one per ``batch_size`` latents (in order), each written atomically
(temp file, fsync, ``os.replace``)::

    {"model_id": str, "layer": int, "sae_set": str, "sae_id_suffix": str | null,
     "features": [{
        "feature_index": int,
        "activations": [{"bin_min", "bin_max", "bin_contains", "tokens": [str], "values": [float],
                         "qualifying_token_index": int}, ...],
        "pos_str", "pos_values", "neg_str", "neg_values", "frac_nonzero",
        "freq_hist_data_bar_values", "freq_hist_data_bar_heights",
        "logits_hist_data_bar_heights", "logits_hist_data_bar_values",
        "neuron_alignment_indices", "neuron_alignment_values", "neuron_alignment_l1",
        "correlated_neurons_indices", "correlated_neurons_l1", "correlated_neurons_pearson",
        "correlated_features_indices", "correlated_features_l1", "correlated_features_pearson",
        "n_prompts_total", "n_tokens_in_prompt", "dataset", "decoder_weights_dist", "vector"}]}

Filled from the stats:

* ``activations``: first the top contexts (SAEDashboard's "TOP ACTIVATIONS" group:
  ``bin_min = -1``, ``bin_contains = -1``, ``bin_max`` = the latent's maximum), then the quantile
  samples from the highest interval down (``bin_min``/``bin_max`` = the interval's edges,
  ``bin_contains`` = the fraction of contexts whose maximum lies in it — SAEDashboard counts
  tokens instead). ``tokens`` are the window's token strings (``FeatureStats.token_str``),
  ``values`` its activations, ``qualifying_token_index`` the maximum's index in the window.
  Empty slots are left out; a dead latent has none;
* ``pos_*`` / ``neg_*``: the logit effects (empty when the stats have none);
* ``frac_nonzero``: ``density``;
* ``freq_hist_data_bar_heights``: ``hist_counts``; ``freq_hist_data_bar_values``: each bin's
  centre as an activation, ``10 ** centre`` — interplab's bins are log10-spaced (SAEDashboard's
  are linear), so the bars are not evenly spaced;
* ``n_prompts_total`` = ``n_contexts``, ``n_tokens_in_prompt`` = ``context_len`` (0 when
  unknown), ``dataset`` as given.

Neutral values for what interplab does not compute: ``logits_hist_data_*``, ``neuron_alignment_*``,
``correlated_neurons_*``, ``correlated_features_*``, ``decoder_weights_dist`` and ``vector`` are
empty lists (the importer then records no vector; the decoder-cosine neighbours have no field in
this format). Floats are rounded to ``decimals`` places as SAEDashboard does (3), except the
histogram's bar values; ``decimals=None`` keeps them exact.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from interplab.core.artifacts import write_bytes
from interplab.core.errors import ConfigError
from interplab.core.sites import Site
from interplab.dictionary.features import FeatureStats

EMPTY_KEYS = ("logits_hist_data_bar_heights", "logits_hist_data_bar_values", "neuron_alignment_indices",
              "neuron_alignment_values", "neuron_alignment_l1", "correlated_neurons_indices",
              "correlated_neurons_l1", "correlated_neurons_pearson", "correlated_features_indices",
              "correlated_features_l1", "correlated_features_pearson", "decoder_weights_dist", "vector")


def export_neuronpedia(stats: FeatureStats, out_dir: str | Path, model_id: str, sae_id: str, *,
                       layer: int | None = None, sae_id_suffix: str | None = None, dataset: str = "",
                       batch_size: int = 128, decimals: int | None = 3, latents: Sequence[int] | None = None,
                       overwrite: bool = False) -> list[Path]:
    """Write ``stats`` as Neuronpedia dashboard batches (see the module docstring); returns the
    files. ``sae_id`` is the batch's ``sae_set`` (Neuronpedia's source set, e.g. ``res-jb``; the
    SAE is then ``<layer>-<sae_id>[__<sae_id_suffix>]`` there); ``layer`` defaults to the input
    site's layer (0 for ``embed``); ``latents`` to all of them. Existing ``batch-*.json`` files
    in ``out_dir`` raise ``FileExistsError`` unless ``overwrite`` (then those beyond the new ones
    are removed)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    latents = list(range(stats.d_sae)) if latents is None else [int(i) for i in latents]
    bad = [i for i in latents if not 0 <= i < stats.d_sae]
    if bad:
        raise ConfigError(f"Latents {bad[:5]} out of range: the stats have {stats.d_sae} (0..{stats.d_sae - 1}).")
    out_dir = Path(out_dir)
    old = sorted(out_dir.glob("batch-*.json")) if out_dir.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(f"{out_dir} already holds {old[0].name}; pass overwrite=True or pick another directory.")
    if layer is None:
        layer = Site.parse(stats.input_site).layer or 0
    head = {"model_id": model_id, "layer": int(layer), "sae_set": sae_id, "sae_id_suffix": sae_id_suffix}
    written = []
    for n, lo in enumerate(range(0, len(latents), batch_size)):
        features = neuronpedia_features(stats, latents[lo: lo + batch_size], dataset, decimals)
        text = json.dumps({**head, "features": features}, allow_nan=False, separators=(",", ":"))
        written.append(write_bytes(out_dir / f"batch-{n}.json", text.encode()))
    for path in old:
        if path not in written:
            path.unlink(missing_ok=True)
    return written


def neuronpedia_feature(stats: FeatureStats, i: int, dataset: str = "", decimals: int | None = 3) -> dict:
    """Latent ``i`` as one item of a batch's ``features`` (see the module docstring)."""
    return neuronpedia_features(stats, [i], dataset, decimals)[0]


def neuronpedia_features(stats: FeatureStats, latents: Sequence[int], dataset: str = "",
                         decimals: int | None = 3) -> list[dict]:
    """``latents`` as items of a batch's ``features``: each tensor is sliced and turned into
    Python lists once for all of them."""
    idx = torch.tensor(list(latents), dtype=torch.long)

    def rows(t: torch.Tensor | None) -> list | None:
        return None if t is None else t.index_select(0, idx).tolist()

    def num(x: float) -> float:
        return x if decimals is None else round(x, decimals)

    def activation(ctx, pos, start, acts, toks, bin_min, bin_max, contains) -> dict:
        return {"bin_min": bin_min, "bin_max": bin_max, "bin_contains": contains,
                "tokens": [stats.token_str(t) for t in toks], "values": [num(x) for x in acts],
                "qualifying_token_index": pos - start}

    top = [rows(t) for t in (stats.top_contexts, stats.top_positions, stats.window_start, stats.window_acts,
                             stats.window_tokens, stats.top_values)]
    quant = [rows(t) for t in (stats.quantile_contexts, stats.quantile_positions, stats.quantile_start,
                               stats.quantile_acts, stats.quantile_tokens, stats.quantile_counts)]
    edges = rows(stats.quantile_edges())
    logits = [rows(t) for t in (stats.logit_top_ids, stats.logit_top_values, stats.logit_bottom_ids,
                                stats.logit_bottom_values)]
    density, hist = rows(stats.density), rows(stats.hist_counts)
    centres = ((stats.hist_edges[:-1] + stats.hist_edges[1:]) / 2).tolist()
    n_ctx = max(stats.n_contexts, 1)
    out = []
    for r, i in enumerate(latents):
        ctx, pos, start, acts, toks, vals = (t[r] for t in top)
        activations = [activation(ctx[j], pos[j], start[j], acts[j], toks[j], -1, num(vals[0]), -1)
                       for j in range(len(ctx)) if ctx[j] >= 0]
        if edges is not None:
            qctx, qpos, qstart, qacts, qtoks, counts = (t[r] for t in quant)
            for q in reversed(range(len(qctx))):
                activations += [activation(qctx[q][j], qpos[q][j], qstart[q][j], qacts[q][j], qtoks[q][j],
                                           num(edges[r][q]), num(edges[r][q + 1]), counts[q] / n_ctx)
                                for j in range(len(qctx[q])) if qctx[q][j] >= 0]
        feature = {
            "feature_index": int(i),
            "activations": activations,
            "pos_str": [], "pos_values": [], "neg_str": [], "neg_values": [],
            "frac_nonzero": density[r],
            "freq_hist_data_bar_values": [10.0 ** c for c in centres],
            "freq_hist_data_bar_heights": hist[r],
            "n_prompts_total": stats.n_contexts,
            "n_tokens_in_prompt": stats.context_len or 0,
            "dataset": dataset,
            **{k: [] for k in EMPTY_KEYS},
        }
        if logits[0] is not None:
            top_ids, top_vals, bot_ids, bot_vals = (t[r] for t in logits)
            feature.update(pos_str=[stats.token_str(t) for t in top_ids], pos_values=[num(v) for v in top_vals],
                           neg_str=[stats.token_str(t) for t in bot_ids], neg_values=[num(v) for v in bot_vals])
        out.append(feature)
    return out
