"""dictionary layer (see DESIGN.md): sparse dictionaries, trainer, evaluation, features."""

from interplab.dictionary import topk  # noqa: F401  (registers)
from interplab.dictionary.base import DICTIONARIES, Dictionary, DictionaryConfig, register_dictionary

__all__ = ["DICTIONARIES", "Dictionary", "DictionaryConfig", "register_dictionary"]
