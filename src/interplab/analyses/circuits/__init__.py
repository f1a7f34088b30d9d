"""Circuit discovery on one computational graph (nodes: embed, heads, MLPs, logits; edges
into each receiver's q / k / v / input): exact edge patching, EAP, EAP-IG, ACDC, and the
faithfulness / AUROC scores that judge them. See each module's docstring for the technique,
its assumptions and its reference."""

from interplab.analyses.circuits.acdc import ACDCConfig, ACDCResult, acdc
from interplab.analyses.circuits.eap import EAPConfig, eap
from interplab.analyses.circuits.edges import ABLATIONS, CircuitTask, EdgePatcher
from interplab.analyses.circuits.exact import EdgeScores, ExactConfig, exact_edge_patching
from interplab.analyses.circuits.faithfulness import (
    FaithfulnessConfig,
    FaithfulnessResult,
    auroc_ci_over_prompts,
    edge_auroc,
    faithfulness,
    node_auroc,
)
from interplab.analyses.circuits.graph import CircuitGraph

__all__ = [
    "ABLATIONS", "ACDCConfig", "ACDCResult", "CircuitGraph", "CircuitTask", "EAPConfig",
    "EdgePatcher", "EdgeScores", "ExactConfig", "FaithfulnessConfig", "FaithfulnessResult",
    "acdc", "auroc_ci_over_prompts", "eap", "edge_auroc", "exact_edge_patching", "faithfulness",
    "node_auroc",
]
