"""On SmolLM2-135M, a sentiment steering vector (CAA-style difference of means at L10, and the
RepE PCA vector) moves a sentiment probe read at L20 monotonically with the scale: the mean
steerability slope's CI lies above 0, and steering has a measurable side effect (KL > 0 on a
neutral corpus) that is exactly 0 at scale 0.

The vector and the probe come from disjoint subject groups of the ``sentiment`` dataset, and
the steered prompts are open-ended sentence starts from neither, so the probe cannot simply
recognise the texts the vector was built from.
"""

from __future__ import annotations

import logging

import pytest
import torch

from interplab.analyses.collect import collect
from interplab.analyses.probes import ProbeConfig, fit_probe
from interplab.analyses.steering import diff_means, pca_diff
from interplab.analyses.steering_eval import SteeringEvalConfig, evaluate_steering
from interplab.tasks.labelled import make_dataset

pytestmark = pytest.mark.models
log = logging.getLogger(__name__)

STEER_SITE, PROBE_SITE = "L10.resid_post", "L20.resid_post"
PROMPTS = ["I think the movie was", "The food at this place is", "My day has been",
           "Honestly, the book felt", "The service we got was", "Overall the trip was"]


@pytest.fixture(scope="module")
def setup(smollm2):
    ds = make_dataset("sentiment", n=160, seed=0)
    groups, labels = torch.tensor(ds.groups), torch.tensor(ds.labels)
    for_vector = groups % 2 == 0  # the vector from even subject groups, the probe from odd ones
    pairs = [(ds.texts[p], ds.texts[q]) for p, q in ds.pairs if for_vector[p]]
    held = [t for t, v in zip(ds.texts, for_vector, strict=True) if not v]
    acts = collect(smollm2, held, [PROBE_SITE], "last")[PROBE_SITE]
    fit = fit_probe(acts, labels[~for_vector], groups[~for_vector],
                    ProbeConfig(site=PROBE_SITE, n_resamples=200))
    assert fit.accuracy["test"] >= 0.8, fit.summary()
    return pairs, fit.probe


def _check(result):
    est, low, high = (float(x) for x in (result.slope.estimate, result.slope.low, result.slope.high))
    log.info("slope %.3f [%.3f, %.3f]; mean score %s; KL %s; ppl %s; wrong sign %.2f", est, low,
             high, result.mean_score.estimate.tolist(), result.kl.tolist(),
             result.perplexity.tolist(), float(result.wrong_sign.estimate))
    assert low > 0, f"slope CI [{low:.3f}, {high:.3f}] does not lie above 0"
    assert (result.mean_score.estimate.diff() > 0).all(), result.mean_score.estimate
    zero = result.scales.tolist().index(0.0)
    assert result.kl[zero] == 0
    assert (torch.cat([result.kl[:zero], result.kl[zero + 1:]]) > 0).all()
    assert float(result.wrong_sign.estimate) <= 0.2


def test_sentiment_vector_moves_probe_monotonically(smollm2, setup):
    pairs, probe = setup
    pos, neg = [p for p, _ in pairs], [q for _, q in pairs]
    cfg = SteeringEvalConfig(scales=[-2.0, -1.0, 0.0, 1.0, 2.0], n_contexts=2, ctx_len=32,
                             max_new_tokens=8, n_samples=1, n_resamples=500)
    caa = diff_means(smollm2, pos, neg, STEER_SITE)
    res = evaluate_steering(smollm2, caa, PROMPTS, cfg, probe=probe)
    _check(res)
    assert res.output_length.shape == (1, 5) and set(res.samples) == set(cfg.scales)
    # scale 0 is the unsteered model: the probe's own score on the prompts
    torch.testing.assert_close(res.scores[:, 2], probe(smollm2, PROMPTS), rtol=0, atol=0)

    pca = pca_diff(smollm2, pos, neg, STEER_SITE)
    assert torch.nn.functional.cosine_similarity(pca.vector, caa.vector, dim=0) > 0.5
    _check(evaluate_steering(smollm2, pca, PROMPTS, cfg, probe=probe))
