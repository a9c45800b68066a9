"""The design notes' figures (shared/reference/bottleneck-design-notes.txt) beside our own counts.

Three columns per figure: what the notes publish, our closed form, and fvcore's traced count of
the module we build. FLOPs are multiply-accumulates throughout.
"""

from __future__ import annotations

import torch

from blocks.basic import BasicBlock
from blocks.bottleneck import Bottleneck
from blocks.cost import conv2d_cost
from blocks.counting import complexity, fvcore_analysis

C, HW = 256, (14, 14)
# Figures as the notes print them: the worked example (exact) and the network table (rounded).
WORKED_EXAMPLE = {
    "conv1": 3_211_264,
    "conv2": 7_225_344,
    "conv3": 3_211_264,
    "bottleneck": 13_647_872,
    "basic": 231_211_008,
}
NETWORKS = {  # preset: (params, FLOPs), None where the notes give no figure
    "resnet34": (21.8e6, 3.6e9),
    "resnet50": (25.6e6, 3.8e9),
    "resnet101": (None, None),
    "resnet152": (None, 11.3e9),
}


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def worked_example() -> list[str]:
    """The 256-channel bottleneck at 14x14 against the basic block, layer by layer."""
    image = torch.zeros(1, C, *HW)
    bottleneck = fvcore_analysis(Bottleneck(C, C, 1, expansion=4), image).by_module()
    basic = fvcore_analysis(BasicBlock(C, C, 1), image).by_module()
    inner = C // 4
    ours = {
        "conv1": conv2d_cost(C, inner, 1, 1, HW)[0].flops,
        "conv2": conv2d_cost(inner, inner, 3, 1, HW)[0].flops,
        "conv3": conv2d_cost(inner, C, 1, 1, HW)[0].flops,
        "bottleneck": Bottleneck.cost(C, C, 1, HW, expansion=4)[0].flops,
        "basic": BasicBlock.cost(C, C, 1, HW)[0].flops,
    }
    measured = {
        **{k: bottleneck[k] for k in ("conv1", "conv2", "conv3")},
        "bottleneck": sum(bottleneck[k] for k in ("conv1", "conv2", "conv3")),
        "basic": basic["conv1"] + basic["conv2"],
    }
    labels = {
        "conv1": "1x1 compress 256->64",
        "conv2": "3x3 process 64->64",
        "conv3": "1x1 expand 64->256",
        "bottleneck": "bottleneck block total",
        "basic": "basic block (two 3x3 at 256)",
    }
    lines = [
        "## Worked example: one block at C=256, 14x14 (FLOPs = multiply-accumulates)",
        "",
        _row(["layer", "design notes", "closed form", "fvcore"]),
        _row(["---"] + ["---:"] * 3),
    ]
    lines += [_row([labels[k], f"{WORKED_EXAMPLE[k]:,}", f"{ours[k]:,}", f"{measured[k]:,}"]) for k in labels]
    ratio = ours["basic"] / ours["bottleneck"]
    lines += [
        _row(
            ["basic / bottleneck", "about 17x", f"{ratio:.2f}x", f"{measured['basic'] / measured['bottleneck']:.2f}x"]
        ),
        _row(["16 basic blocks at 14x14", "about 3.7 billion", f"{16 * ours['basic']:,}", ""]),
        "",
    ]
    agree = all(ours[k] == WORKED_EXAMPLE[k] == measured[k] for k in labels)
    lines.append("All figures agree exactly." if agree else "MISMATCH: see the rows above.")
    return lines


def _billions(value: float | None) -> str:
    return "not given" if value is None else f"{value / 1e9:.1f}G"


def _millions(value: float | None) -> str:
    return "not given" if value is None else f"{value / 1e6:.1f}M"


def network_table() -> list[str]:
    """ResNet-34/50/101/152 params and FLOPs at 224: the notes, torchvision's v1.5 and the paper's v1."""
    lines = [
        "## Networks at 224x224 (FLOPs = multiply-accumulates)",
        "",
        _row(
            [
                "network",
                "notes params",
                "our params",
                "notes FLOPs",
                "ours v1.5 (torchvision)",
                "ours v1 (paper)",
                "why they differ",
            ]
        ),
        _row(["---"] + ["---:"] * 5 + ["---"]),
    ]
    for preset, (params, flops) in NETWORKS.items():
        v15 = complexity(preset, 224)
        v1 = complexity(preset, 224, stride_in_1x1=True) if v15.spec.block == "bottleneck" else v15
        lines.append(
            _row(
                [
                    preset,
                    _millions(params),
                    f"{v15.params:,}",
                    _billions(flops),
                    f"{v15.flops:,}",
                    f"{v1.flops:,}",
                    _why(v15.flops, v1.flops, flops),
                ]
            )
        )
    return lines


def _why(v15: int, v1: int, published: float | None) -> str:
    if published is None:
        return "the notes give no figure"
    if v1 == v15:
        return (
            f"basic blocks have no 1x1 to stride; the notes' {published / 1e9:.1f}G is our "
            f"{v1 / 1e9:.2f}G cut to two digits"
        )
    return (
        f"the paper strides the first 1x1 (v1: {v1 / 1e9:.2f}G, rounded down to "
        f"{published / 1e9:.1f}G); torchvision strides the 3x3 (v1.5), +{v15 / v1 - 1:.1%} MACs"
    )


def design_notes_report() -> str:
    """The whole report as Markdown."""
    return "\n".join(["# Design notes' figures, reproduced", "", *worked_example(), "", *network_table()])
