"""Closed-form params and FLOPs (MACs) against fvcore and torch's FlopCounterMode, exactly."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import blocks

SMALL = {"widths": [16, 32, 64], "depths": [1, 2, 1], "strides": [1, 2, 2], "stem_width": 8, "num_classes": 7}
VARIANTS = {
    "basic": {**SMALL, "block": "basic", "expansion": 1},
    "basic_se": {**SMALL, "block": "basic", "expansion": 1, "se_reduction": 4},
    "bottleneck": {**SMALL, "block": "bottleneck", "expansion": 4},
    "bottleneck_per_stage": {**SMALL, "block": "bottleneck", "expansion": [1, 2, 0.5]},
    "bottleneck_v1": {**SMALL, "block": "bottleneck", "expansion": 2, "stride_in_1x1": True},
    "resnext": {**SMALL, "block": "bottleneck", "expansion": 2, "groups": 4},
    "se": {**SMALL, "block": "bottleneck", "expansion": 4, "se_reduction": 2},
    "inverted": {**SMALL, "block": "inverted", "expansion": 6, "stem": "mobilenet", "head_width": 96, "dropout": 0.2},
    "inverted_se": {**SMALL, "block": "inverted", "expansion": [1, 4, 3], "se_reduction": 4},
    "imagenet_stem": {**SMALL, "block": "basic", "expansion": 1, "stem": "imagenet", "in_channels": 1},
}


def fvcore_flops(net, resolution):
    return blocks.measured_flops(net, torch.zeros(1, net.spec.in_channels, resolution, resolution))


def flop_counter_macs(net, resolution):
    with FlopCounterMode(display=False) as counter:
        net.eval()(torch.zeros(1, net.spec.in_channels, resolution, resolution, device="meta"))
    return counter.get_total_flops() // 2  # torch counts 2 FLOPs per multiply-accumulate


@pytest.mark.parametrize("resolution", [224, 97, 225])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_closed_form_equals_measured(variant, resolution):
    net = blocks.build_model(VARIANTS[variant])
    cx = blocks.complexity(VARIANTS[variant], resolution=resolution)
    assert cx.params == sum(p.numel() for p in net.parameters())
    assert cx.flops == fvcore_flops(net, resolution)
    assert cx.flops == flop_counter_macs(net.to("meta"), resolution)


@pytest.mark.parametrize("preset", blocks.preset_names())
def test_every_preset_at_224_and_97(preset):
    with torch.device("meta"):
        net = blocks.build_model(preset)
    for resolution in (224, 97):
        assert blocks.complexity(preset, resolution).flops == flop_counter_macs(net, resolution)
    assert blocks.complexity(preset).params == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("preset", ["resnet50", "mobilenet_v2", "se_resnet50", "resnext50_32x4d"])
def test_presets_against_fvcore(preset):
    net = blocks.build_model(preset)
    cx = blocks.complexity(net, resolution=225)
    assert cx.fvcore_flops == cx.flops


def test_published_resnet50_figures():
    # torchvision's table: 25,557,032 params and 4.09 GMACs at 224 (fvcore agrees, field notes).
    cx = blocks.complexity("resnet50", resolution=224)
    assert (cx.params, round(cx.flops / 1e9, 2)) == (25_557_032, 4.09)


def test_overrides_match_a_spec_written_out():
    overridden = blocks.complexity("resnet50", resolution=224, expansion=2)
    written = blocks.complexity(
        {"block": "bottleneck", "depths": [3, 4, 6, 3], "widths": [256, 512, 1024, 2048], "expansion": 2},
        resolution=224,
    )
    assert (overridden.params, overridden.flops) == (written.params, written.flops)
    net = blocks.build_model("resnet50", expansion=2)
    assert net.layer1[0].conv1.out_channels == 128


def test_closed_form_builds_no_module(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("complexity() built a module")

    monkeypatch.setattr(torch.nn.Module, "__init__", refuse)
    assert blocks.complexity("resnet152", resolution=224).flops > 0


def test_stage_rows_carry_output_shapes():
    cx = blocks.complexity("resnet50", resolution=224)
    assert [row.shape for row in cx.rows] == [
        (64, 56, 56),
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (2048, 7, 7),
        (1000,),
    ]
