"""Squeeze-and-excitation (Hu et al. 2018): an option of every block family, not a block of its own."""

from __future__ import annotations

import torch
from torch import nn

from blocks.cost import Cost, conv2d_cost


def reduced_channels(channels: int, reduction: int) -> int:
    """Hidden width of the excitation MLP (channels); at least one channel."""
    return max(1, channels // reduction)


class SqueezeExcite(nn.Module):
    """Global pool, 1x1 conv + ReLU, 1x1 conv + sigmoid, rescale: timm's `SEModule` layout."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        scale = self.act(self.fc1(scale))
        scale = self.gate(self.fc2(scale))
        return x * scale

    @staticmethod
    def cost(channels: int, reduction: int) -> Cost:
        """Params and FLOPs (MACs) of the excitation MLP; it runs on a 1x1 map."""
        hidden = reduced_channels(channels, reduction)
        fc1, _ = conv2d_cost(channels, hidden, 1, 1, (1, 1), bias=True)
        fc2, _ = conv2d_cost(hidden, channels, 1, 1, (1, 1), bias=True)
        return fc1 + fc2


def squeeze_excite(channels: int, reduction: int) -> nn.Module:
    """An SE module, or the identity when `reduction` is 0."""
    return SqueezeExcite(channels, reduction) if reduction else nn.Identity()


def squeeze_excite_cost(channels: int, reduction: int) -> Cost:
    """Cost of `squeeze_excite(channels, reduction)`."""
    return SqueezeExcite.cost(channels, reduction) if reduction else Cost()
