"""Bottleneck block, 1x1 compress, 3x3 process, 1x1 expand; ResNeXt is `groups > 1`.

`expansion` is the stage output width over the inner width (4 in ResNet-50: 256 -> 64 -> 64 -> 256).
"""

from __future__ import annotations

import torch
from torch import nn

from blocks.cost import HW, Cost, conv_bn_cost
from blocks.layers import conv2d, projection_shortcut, projection_shortcut_cost, zero_init_
from blocks.squeeze_excite import squeeze_excite, squeeze_excite_cost


def inner_width(c_out: int, expansion: float) -> int:
    """Channels of the 3x3 conv: output channels / expansion (validated to be whole upstream)."""
    return round(c_out / expansion)


def split_stride(stride: int, stride_in_1x1: bool) -> tuple[int, int]:
    """Strides of (first 1x1, 3x3): ResNet v1 strides the 1x1, torchvision's v1.5 the 3x3."""
    return (stride, 1) if stride_in_1x1 else (1, stride)


class Bottleneck(nn.Module):
    """1x1 conv-BN-ReLU, 3x3 (grouped) conv-BN-ReLU, 1x1 conv-BN, optional SE, add, ReLU."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        *,
        expansion: float = 4,
        groups: int = 1,
        se_reduction: int = 0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = inner_width(c_out, expansion)
        stride_1x1, stride_3x3 = split_stride(stride, stride_in_1x1)
        self.conv1 = conv2d(c_in, width, 1, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv2d(width, width, 3, stride_3x3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv2d(width, c_out, 1)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.se = squeeze_excite(c_out, se_reduction)
        self.downsample = projection_shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.se(out)
        return self.relu(out + self.downsample(x))

    @staticmethod
    def cost(
        c_in: int,
        c_out: int,
        stride: int,
        hw: HW,
        *,
        expansion: float = 4,
        groups: int = 1,
        se_reduction: int = 0,
        stride_in_1x1: bool = False,
    ) -> tuple[Cost, HW]:
        """Params and FLOPs (MACs) of the block on an `hw` input; returns (cost, output hw)."""
        width = inner_width(c_out, expansion)
        stride_1x1, stride_3x3 = split_stride(stride, stride_in_1x1)
        conv1, hw1 = conv_bn_cost(c_in, width, 1, stride_1x1, hw)
        conv2, out_hw = conv_bn_cost(width, width, 3, stride_3x3, hw1, groups=groups)
        conv3, _ = conv_bn_cost(width, c_out, 1, 1, out_hw)
        se = squeeze_excite_cost(c_out, se_reduction)
        shortcut = projection_shortcut_cost(c_in, c_out, stride, hw)
        return conv1 + conv2 + conv3 + se + shortcut, out_hw

    def branch_entry(self) -> nn.Module:
        """The first layer of the residual branch: its input gradient is the branch's share."""
        return self.conv1

    def zero_init_last(self) -> None:
        """Start the block as its shortcut."""
        zero_init_(self.bn3)
