"""Inverted residual block of MobileNetV2 (Sandler et al. 2018): expand, depthwise, linear project.

`expansion` is the inner width over the input width (6 in MobileNetV2); at 1 the expand conv is
left out, as torchvision does.
"""

from __future__ import annotations

import torch
from torch import nn

from blocks.cost import HW, Cost, conv_bn_cost
from blocks.layers import conv2d, zero_init_
from blocks.squeeze_excite import squeeze_excite, squeeze_excite_cost


def expanded_width(c_in: int, expansion: float) -> int:
    """Channels of the depthwise conv: input channels x expansion (validated to be whole upstream)."""
    return round(c_in * expansion)


def has_residual(c_in: int, c_out: int, stride: int) -> bool:
    """The skip exists only where the shape is kept; an inverted block never projects it."""
    return stride == 1 and c_in == c_out


class InvertedResidual(nn.Module):
    """1x1 expand-BN-ReLU6, 3x3 depthwise-BN-ReLU6, optional SE, 1x1 project-BN, add if shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, expansion: float = 6, se_reduction: int = 0) -> None:
        super().__init__()
        width = expanded_width(c_in, expansion)
        expands = width != c_in
        self.use_residual = has_residual(c_in, c_out, stride)
        self.conv1 = conv2d(c_in, width, 1) if expands else nn.Identity()
        self.bn1 = nn.BatchNorm2d(width) if expands else nn.Identity()
        self.act1 = nn.ReLU6(inplace=True) if expands else nn.Identity()
        self.conv2 = conv2d(width, width, 3, stride, groups=width)
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU6(inplace=True)
        self.se = squeeze_excite(width, se_reduction)
        self.conv3 = conv2d(width, c_out, 1)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.se(out)
        out = self.bn3(self.conv3(out))
        if self.use_residual:
            out = out + x
        return out

    @staticmethod
    def cost(
        c_in: int, c_out: int, stride: int, hw: HW, *, expansion: float = 6, se_reduction: int = 0
    ) -> tuple[Cost, HW]:
        """Params and FLOPs (MACs) of the block on an `hw` input; returns (cost, output hw)."""
        width = expanded_width(c_in, expansion)
        expand = conv_bn_cost(c_in, width, 1, 1, hw)[0] if width != c_in else Cost()
        depthwise, out_hw = conv_bn_cost(width, width, 3, stride, hw, groups=width)
        se = squeeze_excite_cost(width, se_reduction)
        project, _ = conv_bn_cost(width, c_out, 1, 1, out_hw)
        return expand + depthwise + se + project, out_hw

    def branch_entry(self) -> nn.Module:
        """The first layer of the residual branch: its input gradient is the branch's share."""
        return self.conv1 if isinstance(self.bn1, nn.BatchNorm2d) else self.conv2

    def zero_init_last(self) -> None:
        """Start a residual block as its shortcut; a block without one keeps its projection."""
        if self.use_residual:
            zero_init_(self.bn3)
