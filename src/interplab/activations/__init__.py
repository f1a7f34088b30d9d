"""Activations: corpora, packing, the on-disk activation store, on-the-fly sources.

``harvest(model, HarvestConfig(...))`` writes a store; ``ActivationStore.open(path)`` reads it
as a ``BatchSource`` for the dictionary trainer; ``OnTheFlySource`` computes the same batches
without a disk; ``TensorSource`` holds activations already in memory.
"""

from interplab.activations.corpus import CorpusConfig, iter_documents
from interplab.activations.harvest import HarvestConfig, HarvestReport, harvest
from interplab.activations.onthefly import OnTheFlySource
from interplab.activations.packing import Packing, iter_contexts, pack
from interplab.activations.source import BatchSource, TensorSource
from interplab.activations.store import ActivationStore, StoreError

__all__ = [
    "ActivationStore", "BatchSource", "CorpusConfig", "HarvestConfig", "HarvestReport",
    "OnTheFlySource", "Packing", "StoreError", "TensorSource", "harvest", "iter_contexts",
    "iter_documents", "pack",
]
