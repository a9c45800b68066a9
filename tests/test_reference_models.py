"""Our presets against the models the ecosystem ships: torchvision's and timm's."""

import pytest
import timm
import torch
import torchvision

import blocks

TORCHVISION_PRESETS = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
]


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("preset", TORCHVISION_PRESETS)
def test_torchvision_weights_load_and_outputs_match(preset):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, preset)(weights=None).eval()
    ours = blocks.build_model(preset).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(image), reference(image), atol=1e-5, rtol=1e-5)


def test_se_resnet50_has_timms_parameter_count():
    reference = timm.create_model("seresnet50", pretrained=False)
    assert n_params(blocks.build_model("se_resnet50")) == n_params(reference) == 28_088_024


def test_mobilenet_v2_has_torchvisions_parameter_count():
    reference = torchvision.models.mobilenet_v2(weights=None)
    assert n_params(blocks.build_model("mobilenet_v2")) == n_params(reference) == 3_504_872


def test_zero_init_residual_starts_blocks_as_their_shortcut():
    reference = torchvision.models.resnet50(weights=None, zero_init_residual=True)
    ours = blocks.build_model("resnet50", zero_init_residual=True)
    assert all(not block.bn3.weight.any() for block in ours.blocks())
    assert all(not m.bn3.weight.any() for m in reference.modules() if hasattr(m, "bn3"))
