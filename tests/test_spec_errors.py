"""Bad model configs: a ValueError naming field, value and what is allowed; exit 2 on the command line."""

import json

import pytest

import blocks

BAD_SPECS = [
    ({"block": "nosuch"}, "model.block='nosuch'", "allowed: basic, bottleneck, inverted"),
    ({"expansion": 3}, "model.expansion=3", "whole number of channels"),
    ({"expansion": 0}, "model.expansion=0", "number > 0"),
    ({"expansion": 512}, "model.expansion=512", "whole number of channels >= 1"),
    ({"expansion": "abc"}, "model.expansion='abc'", "number > 0"),
    ({"expansion": [4, 4]}, "model.expansion=[4, 4]", "4 values, one per stage"),
    ({"block": "basic", "expansion": 4}, "model.expansion=4", "does not apply to block 'basic'"),
    ({"groups": 3}, "model.groups=3", "does not divide"),
    ({"block": "inverted", "groups": 2, "expansion": 6}, "model.groups=2", "allows only 1"),
    ({"depths": []}, "model.depths=[]", "non-empty list of integers >= 1"),
    ({"depths": [3, -1, 6, 3]}, "model.depths=[3, -1, 6, 3]", "integers >= 1"),
    ({"widths": [256, 512]}, "model.widths=[256, 512]", "4 values, one per stage"),
    ({"stem": "huge"}, "model.stem='huge'", "allowed: imagenet, small, mobilenet"),
    ({"se_reduction": -1}, "model.se_reduction=-1", "integer >= 0"),
    ({"colour": "red"}, "model.colour", "unknown field"),
]


@pytest.mark.parametrize(("overrides", "names", "allowed"), BAD_SPECS)
def test_bad_spec_names_field_value_and_allowed(overrides, names, allowed):
    for call in (blocks.build_model, blocks.complexity):
        with pytest.raises(ValueError) as error:
            call("resnet50", **overrides)
        assert names in str(error.value) and allowed in str(error.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match=r"model='resnet51': unknown preset; allowed: .*resnet50"):
        blocks.build_model("resnet51")


@pytest.mark.parametrize(
    "args",
    [
        ["model=nosuch"],
        ["expansion=0"],
        ["model.expansion=abc"],
        ["model.depths=[]"],
        ["block=basic"],
        ["resolution=-3"],
        ["format=xml"],
        ["colour=red"],
        ["resnet50"],
    ],
)
def test_command_line_errors_are_one_line_exit_2(cli, args):
    result = cli("blocks.complexity", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_command_line_table_and_json(cli):
    table = cli("blocks.complexity", "model=resnet50", "resolution=224", "model.expansion=2")
    assert table.returncode == 0, table.stderr
    expected = blocks.complexity("resnet50", resolution=224, expansion=2)
    assert f"{expected.flops:,}" in table.stdout and "multiply-accumulates" in table.stdout
    as_json = json.loads(cli("blocks.complexity", "model=resnet50", "expansion=2", "format=json").stdout)
    assert (as_json["params"], as_json["flops"]) == (expected.params, expected.flops)
    assert [s["name"] for s in as_json["stages"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]


def test_design_notes_report_reproduces_the_notes(cli):
    result = cli("blocks.complexity", "report=design_notes")
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in result.stdout.splitlines()
        if line.startswith("| ")
    }
    # design notes, closed form and fvcore columns all carry the notes' exact figures
    assert rows["bottleneck block total"] == ["13,647,872"] * 3
    assert rows["basic block (two 3x3 at 256)"] == ["231,211,008"] * 3
    assert rows["1x1 compress 256->64"] == ["3,211,264"] * 3
    assert rows["basic / bottleneck"][1] == "16.94x"
    assert rows["resnet50"][:4] == ["25.6M", "25,557,032", "3.8G", "4,089,184,256"]
    assert rows["resnet50"][4] == "3,857,973,248" and "strides the first 1x1" in rows["resnet50"][5]
    assert rows["resnet152"][2] == "11.3G" and rows["resnet152"][4] == "11,282,415,616"
