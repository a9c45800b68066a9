"""Search spaces from `conf/search/*.yaml`: what Optuna suggests, and the model each suggestion makes.

A dimension's key is where its value goes on the command line: `block` (a `conf/block/` choice),
`model.FIELD`, `width_multiplier` (scales every stage width), or any other config path such as
`optim.optimizer.lr`. Every candidate is therefore a list of overrides `python -m search.run` replays.
"""

from __future__ import annotations

import functools
import itertools
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import optuna
import yaml

import blocks
from blocks.spec import is_number
from blocks.table import markdown_table
from search.errors import ConfigError

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_flops(value: Any, key: str = "budget.flops") -> int | None:
    """Multiply-accumulates from a number or a K/M/G-suffixed string ('3M', '4.1G'); None stays None."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([KMGT]?)\s*", str(value))
    if isinstance(value, bool) or not match or float(match.group(1)) <= 0:
        raise ConfigError(
            f"{key}={value!r}: expected multiply-accumulates > 0, as a number or with a K/M/G suffix (3M, 4.1G)"
        )
    return round(float(match.group(1)) * SUFFIXES[match.group(2)])


@dataclass(frozen=True)
class Dimension:
    """One searched setting: categorical `choices`, or an int/float range [low, high] (log-scaled)."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    per_stage: bool = False
    if_block: tuple[str, ...] | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int)

    @property
    def shapes_model(self) -> bool:
        """Whether the value changes the network (and so its cost)."""
        return self.key in ("block", "width_multiplier") or self.key.startswith("model.")

    def applies(self, block: str | None) -> bool:
        return self.if_block is None or block in self.if_block

    def values(self) -> list[Any]:
        """Every value (for the smallest model and the grid sampler); a float range has none."""
        if self.choices is not None:
            return list(self.choices)
        if self.is_int:
            return list(range(self.low, self.high + 1))
        raise ConfigError(f"search.space.{self.key}: a float range cannot be enumerated; give choices")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


def parse_space(space: Mapping[str, Any]) -> list[Dimension]:
    """Validate `search.space` into dimensions; a bad entry is a ConfigError naming it."""
    example = "e.g. search.space={model.expansion:{choices:[2,4]}}"
    if not isinstance(space, Mapping):
        raise ConfigError(f"search.space={space!r}: expected config paths with their dimensions, {example}")
    if not space:
        raise ConfigError(f"search.space is empty: add at least one dimension, {example}")
    dims = []
    for key, entry in _flatten(space).items():
        where = f"search.space.{key}"
        if entry is not None and not isinstance(entry, Mapping):
            raise ConfigError(f"{where}={entry!r}: expected {{choices: [...]}} or {{low: L, high: H}}")
        entry = dict(entry or {})
        unknown = set(entry) - DIMENSION_OPTIONS
        if unknown:
            raise ConfigError(
                f"{where}: unknown option {sorted(unknown)[0]!r}; allowed: choices, low, high, log, per_stage, if_block"
            )
        choices = entry.get("choices")
        if choices is not None and (not isinstance(choices, (list, tuple)) or not choices):
            raise ConfigError(f"{where}.choices={choices!r}: expected a non-empty list")
        low, high = entry.get("low"), entry.get("high")
        if choices is None and not (is_number(low) and is_number(high) and low <= high):
            raise ConfigError(
                f"{where}: expected choices: [...] or numbers low <= high (got low={low!r}, high={high!r})"
            )
        if_block = entry.get("if_block")
        dims.append(
            Dimension(
                str(key),
                tuple(choices) if choices is not None else None,
                low,
                high,
                bool(entry.get("log", False)),
                bool(entry.get("per_stage", False)),
                tuple(if_block) if if_block else None,
            )
        )
    return sorted(dims, key=lambda d: d.key != "block")  # the family first: other dimensions depend on it


DIMENSION_OPTIONS = {"choices", "low", "high", "log", "per_stage", "if_block"}


def _flatten(space: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested keys (as `search.space.optim.optimizer.lr=...` makes them) joined back into config paths."""
    flat = {}
    for key, entry in space.items():
        path = f"{prefix}{key}"
        if isinstance(entry, Mapping) and entry and not set(entry) & DIMENSION_OPTIONS:
            flat.update(_flatten(entry, f"{path}."))
        else:
            flat[path] = entry
    return flat


@functools.cache
def block_fields(name: str) -> dict[str, Any]:
    """The model fields a `conf/block/NAME.yaml` choice sets."""
    path = resources.files("conf").joinpath("block", f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"block={name}: unknown option in the search space")
    return yaml.safe_load(path.read_text())


def chosen_block(params: Mapping[str, Any], base: Mapping[str, Any]) -> str:
    """The block family of a candidate: its `block` choice's family, or the base network's."""
    return block_fields(params["block"])["block"] if "block" in params else base["block"]


def suggest(trial: optuna.Trial, dims: list[Dimension], base: Mapping[str, Any]) -> dict[str, Any]:
    """Ask the trial for every applicable dimension; per-stage ones give a list (one per stage)."""
    params: dict[str, Any] = {}
    stages = len(base["depths"])
    for dim in dims:
        if not dim.applies(chosen_block(params, base)):
            continue
        if dim.per_stage:
            params[dim.key] = [dim.suggest(trial, f"{dim.key}.{i + 1}") for i in range(stages)]
        else:
            params[dim.key] = dim.suggest(trial, dim.key)
    return params


def candidate_fields(base: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The model fields of a candidate, applied in Hydra's order: block choice, then model.* values."""
    fields = dict(base)
    if "block" in params:
        fields.update(block_fields(params["block"]))
    if "width_multiplier" in params:
        fields["widths"] = [max(1, round(w * params["width_multiplier"])) for w in fields["widths"]]
    fields.update({k.removeprefix("model."): v for k, v in params.items() if k.startswith("model.")})
    return fields


def candidate_cost(base: Mapping[str, Any], params: Mapping[str, Any], resolution: int) -> blocks.Complexity:
    """Closed-form params and FLOPs (MACs at `resolution`) of a candidate; ValueError if it cannot be built."""
    return blocks.complexity(blocks.make_spec(candidate_fields(base, params)), resolution)


def to_overrides(params: Mapping[str, Any], base: Mapping[str, Any]) -> list[str]:
    """Command-line overrides that make `python -m search.run` build the candidate."""
    overrides = []
    for key, value in params.items():
        if key == "width_multiplier":
            key, value = "model.widths", candidate_fields(base, params)["widths"]
        overrides.append(f"{key}={_hydra_value(value)}")
    return overrides


def _hydra_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def smallest_candidate(dims: list[Dimension], base: Mapping[str, Any], resolution: int) -> blocks.Complexity:
    """The cheapest valid model of the space, computed: per-stage choices are minimised stage by stage."""
    shaping = [d for d in dims if d.shapes_model]
    best = None
    for params in _global_assignments([d for d in shaping if not d.per_stage], base):
        stage_dims = [d for d in shaping if d.per_stage and d.applies(chosen_block(params, base))]
        cx = _cheapest_stages(params, stage_dims, base, resolution)
        if cx is not None and (best is None or cx.flops < best.flops):
            best = cx
    if best is None:
        raise ConfigError("search.space: no candidate of the space is a valid model")
    return best


def _global_assignments(global_dims: list[Dimension], base: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every assignment of the dimensions taken once per network, honouring `if_block`."""
    assignments: list[dict[str, Any]] = [{}]
    for dim in global_dims:
        assignments = [
            {**params, dim.key: value} if dim.applies(chosen_block(params, base)) else params
            for params in assignments
            for value in (dim.values() if dim.applies(chosen_block(params, base)) else [None])
        ]
    return assignments


def _cheapest_stages(
    params: dict[str, Any], stage_dims: list[Dimension], base: Mapping[str, Any], resolution: int
) -> blocks.Complexity | None:
    """Stage costs are separable given the global choices: pick each stage's cheapest valid values."""
    stages = len(candidate_fields(base, params)["depths"])
    combos = list(itertools.product(*(d.values() for d in stage_dims)))
    start = next((c for c in combos if _valid(base, params, stage_dims, [c] * stages)), None)
    if start is None:
        return None
    chosen = [start] * stages
    for stage in range(stages):
        costs = [
            (_stage_flops(base, params, stage_dims, chosen[:stage] + [c] + chosen[stage + 1 :], stage, resolution), c)
            for c in combos
        ]
        chosen[stage] = min((cost, c) for cost, c in costs if cost is not None)[1]
    return blocks.complexity(_spec(base, params, stage_dims, chosen), resolution)


def _spec(base, params, stage_dims, per_stage) -> blocks.ModelSpec:
    fields = candidate_fields(base, params)
    for i, dim in enumerate(stage_dims):
        fields[dim.key.removeprefix("model.")] = [combo[i] for combo in per_stage]
    return blocks.make_spec(fields)


def _valid(base, params, stage_dims, per_stage) -> bool:
    try:
        _spec(base, params, stage_dims, per_stage)
    except ValueError:
        return False
    return True


def _stage_flops(base, params, stage_dims, per_stage, stage: int, resolution: int) -> int | None:
    try:
        return blocks.complexity(_spec(base, params, stage_dims, per_stage), resolution).rows[stage + 1].flops
    except ValueError:
        return None


def iter_samples(dims: list[Dimension], base: Mapping[str, Any], n: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """`n` random candidates' params, drawn by Optuna's RandomSampler exactly as a search would."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        yield suggest(study.ask(), dims, base)


def describe(spec: blocks.ModelSpec) -> str:
    """The searched fields of a model, in one line."""
    return (
        f"block={spec.block}, expansion={list(spec.stage_expansions())}, depths={list(spec.depths)}, "
        f"widths={list(spec.widths)}"
    )


def dry_run_report(
    dims: list[Dimension], base: Mapping[str, Any], resolution: int, budget: int | None, samples: int, seed: int
) -> str:
    """How FLOPs and params spread over `samples` random candidates, and how many fit the budget."""
    start = time.perf_counter()
    costs, invalid = [], 0
    for params in iter_samples(dims, base, samples, seed):
        try:
            costs.append(candidate_cost(base, params, resolution))
        except ValueError:
            invalid += 1
    flops = np.array([c.flops for c in costs])
    params = np.array([c.params for c in costs])
    quantiles = [0, 10, 25, 50, 75, 90, 100]
    rows = [[f"p{q}", f"{int(np.percentile(flops, q)):,}", f"{int(np.percentile(params, q)):,}"] for q in quantiles]
    smallest, largest = costs[int(flops.argmin())], costs[int(flops.argmax())]
    lines = [
        f"Dry run: {len(costs) + invalid:,} candidates sampled in {time.perf_counter() - start:.1f} s "
        f"({invalid:,} invalid), nothing trained.",
        markdown_table(["quantile", "FLOPs (MACs)", "params"], rows),
    ]
    if budget is not None:
        fits = int((flops <= budget).sum())
        lines.append(f"Under budget.flops={budget:,} MACs: {fits:,} of {len(costs):,} ({fits / len(costs):.0%}).")
    for label, cx in (("smallest", smallest), ("largest", largest)):
        lines.append(f"{label}: {cx.flops:,} MACs, {cx.params:,} params ({describe(cx.spec)})")
    lines.append("FLOPs are multiply-accumulates at the data's resolution.")
    return "\n".join(lines)
