"""The model config: one flat schema for every block family, its presets and its validation.

Field names here are the public interface shared by `conf/model/*.yaml`, `build_model`,
`complexity` and the command lines. Widths are in channels.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

FAMILIES = ("basic", "bottleneck", "inverted")
STEMS = ("imagenet", "small", "mobilenet")
Number = int | float


class SpecError(ValueError):
    """A model config value that is not allowed; the message names field, value and what is allowed."""


@dataclass(frozen=True)
class ModelSpec:
    """A residual network described by a few numbers (all widths in channels)."""

    block: str = "bottleneck"
    widths: tuple[int, ...] = (256, 512, 1024, 2048)
    depths: tuple[int, ...] = (3, 4, 6, 3)
    strides: tuple[int, ...] = (1, 2, 2, 2)
    expansion: Number | tuple[Number, ...] = 4
    groups: int = 1
    se_reduction: int = 0
    stem: str = "imagenet"
    stem_width: int = 64
    stride_in_1x1: bool = False
    zero_init_residual: bool = False
    head_width: int = 0
    dropout: float = 0.0
    in_channels: int = 3
    num_classes: int = 1000
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def num_stages(self) -> int:
        """Number of stages."""
        return len(self.depths)

    def stage_expansions(self) -> tuple[Number, ...]:
        """The expansion of each stage (a single number is broadcast)."""
        if isinstance(self.expansion, tuple):
            return self.expansion
        return (self.expansion,) * self.num_stages

    def stage_inputs(self) -> tuple[int, ...]:
        """Input channels of each stage's first block."""
        return (self.stem_width, *self.widths[:-1])

    def block_options(self, stage: int) -> dict[str, Any]:
        """Keyword options of this family's block constructor and cost for `stage` (0-based)."""
        options: dict[str, Any] = {"se_reduction": self.se_reduction}
        if self.block == "bottleneck":
            options.update(
                expansion=self.stage_expansions()[stage],
                groups=self.groups,
                stride_in_1x1=self.stride_in_1x1,
            )
        elif self.block == "inverted":
            options["expansion"] = self.stage_expansions()[stage]
        return options

    def replace(self, **overrides: Any) -> ModelSpec:
        """A validated copy with some fields changed."""
        return make_spec({**self.to_dict(), **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready fields (lists, not tuples)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }


FIELDS = tuple(f.name for f in dataclasses.fields(ModelSpec))


def preset_names() -> list[str]:
    """Names of the presets in `conf/model/`."""
    folder = resources.files("conf").joinpath("model")
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


@functools.cache
def _preset_fields(name: str) -> dict[str, Any]:
    path = resources.files("conf").joinpath("model", f"{name}.yaml")
    if not path.is_file():
        raise SpecError(f"model={name!r}: unknown preset; allowed: {', '.join(preset_names())}")
    return {"name": name, **yaml.safe_load(path.read_text())}


def make_spec(fields: Mapping[str, Any]) -> ModelSpec:
    """Validate a mapping of model fields (missing ones take the defaults) into a `ModelSpec`."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise SpecError(f"model.{unknown[0]}: unknown field; allowed: {', '.join(FIELDS)}")
    return ModelSpec(**{k: _as_tuple(v) for k, v in fields.items()})


def resolve_spec(model: str | Mapping[str, Any] | ModelSpec, **overrides: Any) -> ModelSpec:
    """A preset name, a mapping of fields or a spec, with any field overridden."""
    if isinstance(model, ModelSpec):
        if not overrides:
            return model
        base = model.to_dict()
    elif isinstance(model, str):
        base = _preset_fields(model)
    elif isinstance(model, Mapping):
        base = dict(model)
    else:
        raise SpecError(f"model={model!r}: expected a preset name, a mapping of fields or a ModelSpec")
    return make_spec({**base, **overrides})


def _as_tuple(value: Any) -> Any:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(_as_tuple(v) for v in value)
    return value


def _fail(name: str, value: Any, allowed: str) -> SpecError:
    return SpecError(f"model.{name}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def is_int(value: Any) -> bool:
    """Whether `value` is an integer (a YAML or command-line boolean is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether `value` is a finite real number (a boolean is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(spec: ModelSpec, name: str, minimum: int) -> None:
    value = getattr(spec, name)
    if not is_int(value) or value < minimum:
        raise _fail(name, value, f"expected an integer >= {minimum}")


def _check_int_list(spec: ModelSpec, name: str, length: int | None) -> None:
    value = getattr(spec, name)
    if not isinstance(value, tuple) or not value or not all(is_int(v) and v >= 1 for v in value):
        raise _fail(name, value, "expected a non-empty list of integers >= 1, one per stage")
    if length is not None and len(value) != length:
        raise _fail(name, value, f"expected {length} values, one per stage (as many as depths)")


def _check_choice(spec: ModelSpec, name: str, allowed: Sequence[Any]) -> None:
    value = getattr(spec, name)
    if value not in allowed:
        raise _fail(name, value, f"allowed: {', '.join(map(str, allowed))}")


def _validate(spec: ModelSpec) -> None:
    _check_choice(spec, "block", FAMILIES)
    _check_choice(spec, "stem", STEMS)
    _check_int_list(spec, "depths", None)
    for name in ("widths", "strides"):
        _check_int_list(spec, name, spec.num_stages)
    for name, minimum in [
        ("groups", 1),
        ("se_reduction", 0),
        ("stem_width", 1),
        ("head_width", 0),
        ("in_channels", 1),
        ("num_classes", 1),
    ]:
        _check_int(spec, name, minimum)
    for name in ("stride_in_1x1", "zero_init_residual"):
        _check_choice(spec, name, (True, False))
    if not is_number(spec.dropout) or not 0 <= spec.dropout < 1:
        raise _fail("dropout", spec.dropout, "expected a probability in [0, 1)")
    _validate_expansion(spec)
    _validate_groups(spec)


def _validate_expansion(spec: ModelSpec) -> None:
    value = spec.expansion
    per_stage = value if isinstance(value, tuple) else (value,)
    if not all(is_number(e) and e > 0 for e in per_stage):
        raise _fail("expansion", value, "expected a number > 0, or a list of one per stage")
    if isinstance(value, tuple) and len(value) != spec.num_stages:
        raise _fail("expansion", value, f"expected {spec.num_stages} values, one per stage")
    if spec.block == "basic" and any(e != 1 for e in per_stage):
        raise _fail(
            "expansion",
            value,
            "does not apply to block 'basic' (allowed: 1); use block=bottleneck or block=inverted to vary it",
        )
    for stage, (c_in, c_out, e) in enumerate(
        zip(spec.stage_inputs(), spec.widths, spec.stage_expansions(), strict=True), 1
    ):
        if spec.block == "bottleneck":
            _check_whole(value, c_out / e, f"stage {stage} width {c_out} / expansion {e}")
        elif spec.block == "inverted":
            for c in {c_in, c_out}:
                _check_whole(value, c * e, f"stage {stage} input width {c} x expansion {e}")


def _check_whole(value: Any, channels: float, how: str) -> None:
    if channels < 1 or abs(channels - round(channels)) > 1e-9:
        raise _fail(
            "expansion",
            value,
            f"{how} = {channels:g} inner channels; "
            "allowed: values giving a whole number of channels >= 1 in every stage",
        )


def _validate_groups(spec: ModelSpec) -> None:
    if spec.groups == 1:
        return
    if spec.block != "bottleneck":
        raise _fail(
            "groups",
            spec.groups,
            f"block {spec.block!r} allows only 1; grouped 3x3 convs are a bottleneck option (ResNeXt)",
        )
    for stage, (c_out, e) in enumerate(zip(spec.widths, spec.stage_expansions(), strict=True), 1):
        inner = round(c_out / e)
        if inner % spec.groups:
            raise _fail(
                "groups",
                spec.groups,
                f"does not divide stage {stage}'s inner width {inner}; allowed: divisors of every stage's inner width",
            )
