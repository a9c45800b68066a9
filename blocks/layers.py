"""Small module builders shared by the block families, each beside its closed-form cost."""

from __future__ import annotations

from torch import nn

from blocks.cost import HW, Cost, conv_bn_cost


def conv2d(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free square conv with 'same' padding (channels in, channels out)."""
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


def needs_projection(c_in: int, c_out: int, stride: int) -> bool:
    """Whether the skip path must change shape (then it is a 1x1 conv + BN, the ResNet 'option B')."""
    return stride != 1 or c_in != c_out


def projection_shortcut(c_in: int, c_out: int, stride: int) -> nn.Module:
    """1x1 conv + BN where the shape changes, else the identity (torchvision's `downsample`)."""
    if not needs_projection(c_in, c_out, stride):
        return nn.Identity()
    return nn.Sequential(conv2d(c_in, c_out, 1, stride), nn.BatchNorm2d(c_out))


def projection_shortcut_cost(c_in: int, c_out: int, stride: int, hw: HW) -> Cost:
    """Cost of `projection_shortcut` on an `hw` input (params, FLOPs as MACs)."""
    if not needs_projection(c_in, c_out, stride):
        return Cost()
    return conv_bn_cost(c_in, c_out, 1, stride, hw)[0]


def zero_init_(bn: nn.BatchNorm2d) -> None:
    """Zero a branch's last BN gamma so the block starts as its shortcut (Goyal et al. 2017)."""
    nn.init.zeros_(bn.weight)
