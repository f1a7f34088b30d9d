"""dictionary layer (see DESIGN.md): sparse dictionaries, trainer, evaluation, features.

Importing this package registers every architecture in ``DICTIONARIES``: topk, batchtopk, relu,
jumprelu, matryoshka, transcoder, skip_transcoder. ``load_dictionary`` reads our own format,
SAELens and sparsify checkpoints; ``export_saelens`` writes the SAELens layout;
``export_neuronpedia`` writes feature statistics as Neuronpedia's dashboard batches.
"""

from interplab.dictionary import (  # noqa: F401  (each import registers its architecture)
    batchtopk,
    jumprelu,
    matryoshka,
    relu,
    skip_transcoder,
    topk,
    transcoder,
)
from interplab.dictionary.base import (
    DICTIONARIES,
    Dictionary,
    DictionaryConfig,
    StepOutput,
    register_dictionary,
)
from interplab.dictionary.evaluate import EvalConfig, EvalResult, evaluate
from interplab.dictionary.features import FeatureConfig, FeatureStats, feature_stats
from interplab.dictionary.formats import export_saelens, load_dictionary
from interplab.dictionary.neuronpedia import export_neuronpedia

__all__ = [
    "DICTIONARIES",
    "Dictionary",
    "DictionaryConfig",
    "EvalConfig",
    "EvalResult",
    "FeatureConfig",
    "FeatureStats",
    "StepOutput",
    "evaluate",
    "export_neuronpedia",
    "export_saelens",
    "feature_stats",
    "load_dictionary",
    "register_dictionary",
]
