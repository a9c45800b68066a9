"""Closed-form cost helpers shared by every block.

Convention (stated once for the whole package): FLOPs are multiply-accumulates (MACs) of
convolutions and linear layers, as fvcore, torchvision's tables and the ResNet paper count
them. Bias additions, batch norm, activations, pooling and the residual addition cost nothing.
Parameters count every learnable tensor, batch-norm affine parameters included.
"""

from __future__ import annotations

from dataclasses import dataclass

HW = tuple[int, int]


@dataclass(frozen=True)
class Cost:
    """Parameter count and FLOPs (multiply-accumulates) of a layer, block or network."""

    params: int = 0
    flops: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.flops + other.flops)


def conv_out_size(hw: HW, kernel: int, stride: int, padding: int) -> HW:
    """Spatial size (height, width in pixels) after a convolution or pooling window."""
    return tuple((size + 2 * padding - kernel) // stride + 1 for size in hw)


def conv2d_cost(
    c_in: int, c_out: int, kernel: int, stride: int, hw: HW, *, groups: int = 1, bias: bool = False
) -> tuple[Cost, HW]:
    """Cost of a square `kernel` conv with 'same' padding on an `hw` input; returns (cost, output hw)."""
    out_hw = conv_out_size(hw, kernel, stride, kernel // 2)
    weights = c_out * (c_in // groups) * kernel * kernel
    params = weights + (c_out if bias else 0)
    return Cost(params, weights * out_hw[0] * out_hw[1]), out_hw


def batchnorm_cost(channels: int) -> Cost:
    """Learnable parameters of a batch norm over `channels` channels (no FLOPs by convention)."""
    return Cost(params=2 * channels)


def conv_bn_cost(c_in: int, c_out: int, kernel: int, stride: int, hw: HW, *, groups: int = 1) -> tuple[Cost, HW]:
    """Cost of a bias-free conv followed by batch norm; returns (cost, output hw)."""
    cost, out_hw = conv2d_cost(c_in, c_out, kernel, stride, hw, groups=groups)
    return cost + batchnorm_cost(c_out), out_hw


def linear_cost(in_features: int, out_features: int) -> Cost:
    """Cost of a fully connected layer with bias on one feature vector."""
    return Cost(in_features * out_features + out_features, in_features * out_features)
