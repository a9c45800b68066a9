"""`complexity()`: closed-form params and FLOPs (MACs) of a model config, and fvcore's measured count."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blocks.cost import HW
from blocks.network import head_cost, stage_cost, stem_cost
from blocks.spec import ModelSpec, SpecError, resolve_spec


@dataclass(frozen=True)
class LayerRow:
    """One row of the per-stage table: params, FLOPs (MACs) and output shape (C, H, W) or (classes,)."""

    name: str
    params: int
    flops: int
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Complexity:
    """Closed-form cost of a network at one input resolution; FLOPs are multiply-accumulates."""

    spec: ModelSpec
    resolution: HW
    rows: tuple[LayerRow, ...]
    fvcore_flops: int | None = None

    @property
    def params(self) -> int:
        """Learnable parameters."""
        return sum(row.params for row in self.rows)

    @property
    def flops(self) -> int:
        """Multiply-accumulates of convolutions and linear layers for one image."""
        return sum(row.flops for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view; FLOPs are multiply-accumulates."""
        out = {
            "model": self.spec.to_dict(),
            "resolution": list(self.resolution),
            "flops_unit": "multiply-accumulates",
            "params": self.params,
            "flops": self.flops,
            "stages": [row.__dict__ | {"shape": list(row.shape)} for row in self.rows],
        }
        if self.fvcore_flops is not None:
            out["fvcore_flops"] = self.fvcore_flops
        return out


def as_hw(resolution: int | tuple[int, int]) -> HW:
    """Normalise an input resolution (pixels) to (height, width)."""
    hw = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if len(hw) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in hw):
        raise SpecError(f"resolution={resolution!r}: expected an integer >= 1 or (height, width)")
    return hw


def complexity(
    model: str | Mapping[str, Any] | ModelSpec | nn.Module,
    resolution: int | tuple[int, int] = 224,
    **overrides: Any,
) -> Complexity:
    """Params and FLOPs (MACs) in closed form, building nothing; a built network adds fvcore's count."""
    hw = as_hw(resolution)
    if isinstance(model, nn.Module):
        spec = resolve_spec(model.spec, **overrides)
        image = torch.zeros(1, spec.in_channels, *hw)
        return _closed_form(spec, hw, fvcore_flops=measured_flops(model, image))
    return _closed_form(resolve_spec(model, **overrides), hw)


def _closed_form(spec: ModelSpec, resolution: HW, fvcore_flops: int | None = None) -> Complexity:
    cost, hw = stem_cost(spec, resolution)
    rows = [LayerRow("stem", cost.params, cost.flops, (spec.stem_width, *hw))]
    for stage in range(spec.num_stages):
        cost, hw = stage_cost(spec, stage, hw)
        rows.append(LayerRow(f"layer{stage + 1}", cost.params, cost.flops, (spec.widths[stage], *hw)))
    cost = head_cost(spec, hw)
    rows.append(LayerRow("head", cost.params, cost.flops, (spec.num_classes,)))
    return Complexity(spec, resolution, tuple(rows), fvcore_flops)


def fvcore_analysis(module: nn.Module, image: torch.Tensor):
    """fvcore's traced count of `module` on `image` (N, C, H, W), in eval mode, warnings off."""
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            # torch marks jit tracing deprecated; fvcore still depends on it (field notes).
            warnings.simplefilter("ignore", FutureWarning)
            from fvcore.nn import FlopCountAnalysis  # traces with torch.jit: slow, so only when asked

            analysis = FlopCountAnalysis(module, image)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()
    finally:
        module.train(was_training)
    return analysis


def measured_flops(module: nn.Module, image: torch.Tensor) -> int:
    """fvcore's count of conv and linear multiply-accumulates on `image` (BN, pooling excluded)."""
    by_operator = fvcore_analysis(module, image).by_operator()
    return sum(by_operator.get(op, 0) for op in ("conv", "linear", "addmm"))
