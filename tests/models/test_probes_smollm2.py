"""A logistic probe finds sentiment at SmolLM2's middle layer (last token, held-out subjects)."""

import pytest

from interplab.analyses.probes import ProbeConfig, probe_layers
from interplab.tasks.labelled import make_dataset

pytestmark = pytest.mark.models


def test_sentiment_is_linearly_decodable_at_the_middle_layer(smollm2):
    ds = make_dataset("sentiment", n=160, seed=0)
    sweep = probe_layers(smollm2, ds, ["L15.resid_post"], ProbeConfig(n_resamples=500))
    r = sweep["L15.resid_post"]
    assert r.accuracy["test"] >= 0.9, r.summary()
    assert float(r.selectivity.low) > 0, r.summary()
