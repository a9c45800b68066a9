"""`python -m blocks.complexity`: per-stage params and FLOPs (MACs) of a model, or the design-notes report.

    python -m blocks.complexity model=resnet50 resolution=224 [model.FIELD=VALUE ...] [format=json]
    python -m blocks.complexity report=design_notes

`FIELD=VALUE` works as well as `model.FIELD=VALUE`; values are YAML (`depths=[2,2,2,2]`).
Implemented in `blocks.counting` and `blocks.design_notes`; this module is the command line only,
so import `blocks.complexity` the function from `blocks`, not this module.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from blocks.counting import Complexity, complexity
from blocks.design_notes import design_notes_report
from blocks.network import build_model
from blocks.spec import FIELDS, SpecError
from blocks.table import markdown_table

OPTIONS = {"model": "resnet50", "resolution": 224, "format": "table", "report": None, "fvcore": False}
FLOPS_NOTE = "FLOPs are multiply-accumulates (MACs) of conv and linear layers, as fvcore counts them."


def parse_args(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `key=value` arguments into command options and model-field overrides."""
    options, overrides = dict(OPTIONS), {}
    for arg in argv:
        key, sep, text = arg.partition("=")
        if not sep:
            raise SpecError(f"{arg!r}: expected key=value; keys: {', '.join(OPTIONS)} or model.FIELD")
        value = yaml.safe_load(text) if text else None
        field = key.removeprefix("model.")
        if field in FIELDS and key != "model":
            overrides[field] = value
        elif key in OPTIONS:
            options[key] = value
        else:
            raise SpecError(
                f"{key}: unknown option; allowed: {', '.join(OPTIONS)} or model.FIELD "
                f"with FIELD one of {', '.join(FIELDS)}"
            )
    if options["format"] not in ("table", "json"):
        raise SpecError(f"format={options['format']!r}: allowed: table, json")
    if options["report"] not in (None, "design_notes"):
        raise SpecError(f"report={options['report']!r}: allowed: design_notes")
    return options, overrides


def format_table(cx: Complexity) -> str:
    """fvcore `flop_count_table`-style Markdown table of the per-stage cost, totals first."""
    measured = cx.fvcore_flops is not None
    header = ["module", "#params", "#FLOPs (MACs)", "output shape"] + (["fvcore #FLOPs"] if measured else [])
    total = ["model", f"{cx.params:,}", f"{cx.flops:,}", f"{(cx.spec.num_classes,)}"]
    rows = [total + ([f"{cx.fvcore_flops:,}"] if measured else [])]
    rows += [[f"  {r.name}", f"{r.params:,}", f"{r.flops:,}", str(r.shape)] + [""] * measured for r in cx.rows]
    h, w = cx.resolution
    return "\n".join([f"{cx.spec.name} at {h}x{w}", markdown_table(header, rows), FLOPS_NOTE])


def run(argv: list[str]) -> str:
    """The command's output for `argv` (raises `SpecError` on bad input)."""
    options, overrides = parse_args(argv)
    if options["report"] == "design_notes":
        return design_notes_report()
    model = options["model"]
    if options["fvcore"]:
        model = build_model(model, **overrides)
        overrides = {}
    cx = complexity(model, options["resolution"], **overrides)
    if options["format"] == "json":
        return json.dumps(cx.to_dict(), indent=2)
    return format_table(cx)


def main(argv: list[str] | None = None) -> int:
    """Entry point: prints the table, or one error line on stderr with exit code 2."""
    try:
        print(run(sys.argv[1:] if argv is None else argv))
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
