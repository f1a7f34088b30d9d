"""groundtruth layer (see DESIGN.md): models and data with known mechanisms, and the scoring of
methods against them.

* ``synthetic``: superposed sparse features with known directions (``SyntheticFeatures``,
  ``make_features``) and planted linear concepts for probes (``planted_concept``).
* ``superposition``: the toy model of superposition (Elhage et al. 2022), ``train_toy_model``,
  and its hidden activations with the represented feature directions as ground truth.
* ``scoring``: mean max cosine, Hungarian-matched correlation, probe recovery, AUROC, the
  random-dictionary null, bootstrap CIs over seeds/prompts and paired comparisons.
* ``planted``, ``tracr_*``, ``trained*``: models whose circuit is known (``truth.Truth``).
* ``bench_run`` (``interplab bench``): every method scored against all of these as a
  leaderboard; its suites are in ``bench_suites`` and ``bench_circuits``.
"""

from interplab.groundtruth.scoring import (
    CosineRecovery,
    MatchedCorrelation,
    PairedComparison,
    RecoveryScore,
    ScoreCI,
    auroc,
    bootstrap_score,
    correlation_matrix,
    decoder_directions,
    feature_recovery,
    hungarian_correlation,
    mean_max_cosine,
    null_control,
    paired_comparison,
    probe_recovery,
    random_dictionary,
)
from interplab.groundtruth.superposition import (
    ToyConfig,
    ToyHidden,
    ToyModel,
    hidden_activations,
    train_toy_model,
)
from interplab.groundtruth.synthetic import (
    FeatureSample,
    FeatureSet,
    PlantedConcept,
    SyntheticFeatures,
    make_features,
    planted_concept,
)

__all__ = [
    "CosineRecovery",
    "FeatureSample",
    "FeatureSet",
    "MatchedCorrelation",
    "PairedComparison",
    "PlantedConcept",
    "RecoveryScore",
    "ScoreCI",
    "SyntheticFeatures",
    "ToyConfig",
    "ToyHidden",
    "ToyModel",
    "auroc",
    "bootstrap_score",
    "correlation_matrix",
    "decoder_directions",
    "feature_recovery",
    "hidden_activations",
    "hungarian_correlation",
    "make_features",
    "mean_max_cosine",
    "null_control",
    "paired_comparison",
    "planted_concept",
    "probe_recovery",
    "random_dictionary",
    "train_toy_model",
]
