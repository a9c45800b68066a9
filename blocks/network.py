"""The network builder: stem, stages of one block family, head; module names follow torchvision."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from blocks.basic import BasicBlock
from blocks.bottleneck import Bottleneck
from blocks.cost import HW, Cost, conv_bn_cost, conv_out_size, linear_cost
from blocks.inverted import InvertedResidual
from blocks.layers import conv2d
from blocks.spec import ModelSpec, resolve_spec

BLOCKS: dict[str, type[nn.Module]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "inverted": InvertedResidual,
}

# (kernel, stride, max-pool after it) of each stem.
STEM_LAYOUT = {"imagenet": (7, 2, True), "small": (3, 1, False), "mobilenet": (3, 2, False)}


def activation(spec: ModelSpec) -> nn.Module:
    """ReLU6 for MobileNet-style inverted blocks, ReLU otherwise."""
    return nn.ReLU6(inplace=True) if spec.block == "inverted" else nn.ReLU(inplace=True)


class Network(nn.Module):
    """Stem, `len(depths)` stages named `layer1`..., optional 1x1 head conv, pool, dropout, `fc`."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        kernel, stride, pools = STEM_LAYOUT[spec.stem]
        self.conv1 = conv2d(spec.in_channels, spec.stem_width, kernel, stride)
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.act = activation(spec)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1) if pools else nn.Identity()
        self.stage_names = [f"layer{i + 1}" for i in range(spec.num_stages)]
        for i, name in enumerate(self.stage_names):
            self.add_module(name, self._stage(spec, i))
        c_head = spec.head_width or spec.widths[-1]
        self.conv_head = conv2d(spec.widths[-1], c_head, 1) if spec.head_width else nn.Identity()
        self.bn_head = nn.BatchNorm2d(c_head) if spec.head_width else nn.Identity()
        self.act_head = activation(spec) if spec.head_width else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.fc = nn.Linear(c_head, spec.num_classes)
        self._init_weights()

    @staticmethod
    def _stage(spec: ModelSpec, stage: int) -> nn.Sequential:
        block, options = BLOCKS[spec.block], spec.block_options(stage)
        c_in, c_out = spec.stage_inputs()[stage], spec.widths[stage]
        first = block(c_in, c_out, spec.strides[stage], **options)
        rest = [block(c_out, c_out, 1, **options) for _ in range(spec.depths[stage] - 1)]
        return nn.Sequential(first, *rest)

    def _init_weights(self) -> None:
        # torchvision's ResNet initialisation; then optionally start every block as its shortcut.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.spec.zero_init_residual:
            for block in self.blocks():
                block.zero_init_last()

    def stages(self) -> list[nn.Sequential]:
        """The stages, in order."""
        return [getattr(self, name) for name in self.stage_names]

    def blocks(self) -> list[nn.Module]:
        """Every residual block, in forward order."""
        return [block for stage in self.stages() for block in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        x = self.act_head(self.bn_head(self.conv_head(x)))
        x = torch.flatten(self.avgpool(x), 1)  # (N, C)
        return self.fc(self.dropout(x))


def build_model(model: str | Mapping[str, Any] | ModelSpec, **overrides: Any) -> Network:
    """Build a network from a preset name, a mapping of model fields or a spec, with overrides."""
    return Network(resolve_spec(model, **overrides))


def stem_cost(spec: ModelSpec, hw: HW) -> tuple[Cost, HW]:
    """Params and FLOPs (MACs) of the stem; returns (cost, output hw after any max-pool)."""
    kernel, stride, pools = STEM_LAYOUT[spec.stem]
    cost, out_hw = conv_bn_cost(spec.in_channels, spec.stem_width, kernel, stride, hw)
    return cost, conv_out_size(out_hw, 3, 2, 1) if pools else out_hw


def stage_cost(spec: ModelSpec, stage: int, hw: HW) -> tuple[Cost, HW]:
    """Params and FLOPs (MACs) of one stage (0-based); returns (cost, output hw)."""
    block, options = BLOCKS[spec.block], spec.block_options(stage)
    c_in, c_out = spec.stage_inputs()[stage], spec.widths[stage]
    total, hw = block.cost(c_in, c_out, spec.strides[stage], hw, **options)
    # Every later block of a stage has the same cost: compute it once.
    later, hw_after = block.cost(c_out, c_out, 1, hw, **options)
    times = spec.depths[stage] - 1
    return Cost(total.params + times * later.params, total.flops + times * later.flops), hw_after


def head_cost(spec: ModelSpec, hw: HW) -> Cost:
    """Params and FLOPs (MACs) of the optional head conv and the classifier."""
    conv = conv_bn_cost(spec.widths[-1], spec.head_width, 1, 1, hw)[0] if spec.head_width else Cost()
    return conv + linear_cost(spec.head_width or spec.widths[-1], spec.num_classes)
