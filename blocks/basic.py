"""Basic residual block: two 3x3 convs (ResNet-18/34, He et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn

from blocks.cost import HW, Cost, conv_bn_cost
from blocks.layers import conv2d, projection_shortcut, projection_shortcut_cost, zero_init_
from blocks.squeeze_excite import squeeze_excite, squeeze_excite_cost


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, optional SE, add the shortcut, ReLU. Widths in channels."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, se_reduction: int = 0) -> None:
        super().__init__()
        self.conv1 = conv2d(c_in, c_out, 3, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv2d(c_out, c_out, 3)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.se = squeeze_excite(c_out, se_reduction)
        self.downsample = projection_shortcut(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.se(out)
        return self.relu(out + self.downsample(x))

    @staticmethod
    def cost(c_in: int, c_out: int, stride: int, hw: HW, *, se_reduction: int = 0) -> tuple[Cost, HW]:
        """Params and FLOPs (MACs) of the block on an `hw` input; returns (cost, output hw)."""
        conv1, out_hw = conv_bn_cost(c_in, c_out, 3, stride, hw)
        conv2, _ = conv_bn_cost(c_out, c_out, 3, 1, out_hw)
        se = squeeze_excite_cost(c_out, se_reduction)
        shortcut = projection_shortcut_cost(c_in, c_out, stride, hw)
        return conv1 + conv2 + se + shortcut, out_hw

    def branch_entry(self) -> nn.Module:
        """The first layer of the residual branch: its input gradient is the branch's share."""
        return self.conv1

    def zero_init_last(self) -> None:
        """Start the block as its shortcut."""
        zero_init_(self.bn2)
