"""Residual CNN blocks, the network builder and closed-form complexity.

Cost convention, used everywhere in blocksearch: FLOPs are multiply-accumulates (MACs) of
convolutions and linear layers, as fvcore, torchvision's tables and the ResNet paper count them;
batch norm, activations, pooling, bias and residual additions are not counted. Widths are in
channels. This package is plain PyTorch: it never imports Hydra, Lightning, Optuna or W&B.
"""

from blocks.counting import Complexity, complexity, measured_flops
from blocks.network import BLOCKS, Network, build_model
from blocks.spec import FAMILIES, ModelSpec, SpecError, make_spec, preset_names, resolve_spec

__all__ = [
    "BLOCKS",
    "FAMILIES",
    "Complexity",
    "ModelSpec",
    "Network",
    "SpecError",
    "build_model",
    "complexity",
    "make_spec",
    "measured_flops",
    "preset_names",
    "resolve_spec",
]
