"""`python -m search.select search.storage=URL search.study_name=NAME budget.flops=2M out=chosen/`.

Picks the most accurate complete trial under the budget (or, without a budget, prints the whole
Pareto front of accuracy against FLOPs), exports it as a `conf/model` config, its checkpoint and
the front, and prints the command that replays it. `retrain.seeds=3` retrains it with three seeds.
"""

from __future__ import annotations

import shlex
import shutil
import statistics
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from blocks.table import markdown_table
from search.ablation import write_csv
from search.cli import parse_options, run_main
from search.errors import ConfigError
from search.outdir import staged_output
from search.space import parse_flops

OPTIONS = {"search.storage": None, "search.study_name": None, "budget.flops": None, "out": "chosen", "retrain.seeds": 0}
# Overrides of the search's command that the exported model replaces.
MODEL_KEYS = ("model=", "model.", "block=", "expansion=", "depths=", "widths=", "+model.")


def parse_args(argv: list[str]) -> dict[str, Any]:
    """`key=value` options; unknown keys are a ConfigError listing the known ones."""
    options = parse_options(argv, OPTIONS)
    if not options["search.storage"]:
        raise ConfigError("search.storage is missing: give the study's storage URL (sqlite:///runs/NAME/study.db)")
    seeds = str(options["retrain.seeds"])
    if not seeds.isdigit():
        raise ConfigError(f"retrain.seeds={seeds}: expected an integer >= 0")
    options["retrain.seeds"] = int(seeds)
    return options


def load_study(url: str, name: str | None) -> optuna.Study:
    """The study, or a ConfigError naming what the storage holds."""
    from search.storage import open_storage

    storage = open_storage(url, heartbeat_s=60, existing=True)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise ConfigError(f"search.study_name={name}: not in {url}; it holds: {', '.join(names) or 'no studies'}")
    return optuna.load_study(study_name=name, storage=storage)


def trained(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials that trained (over-budget candidates and failures left out)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("trained")]


def accuracy(trial: FrozenTrial) -> float:
    """The trial's objective: best val/acc (a fraction)."""
    return trial.values[0]


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as a table row: state, whether it trained, val/acc (a fraction), FLOPs (MACs), params."""
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "trained": bool(trial.user_attrs.get("trained")),
        "val_acc": trial.values[0] if trial.values else None,
        "flops_macs": trial.user_attrs.get("flops"),
        "params": trial.user_attrs.get("params"),
        "overrides": " ".join(trial.user_attrs.get("overrides", [])),
    }


def pareto_front(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials no other trial beats on both accuracy (higher) and FLOPs (lower), cheapest first."""

    def dominated(t: FrozenTrial) -> bool:
        return any(
            accuracy(o) >= accuracy(t)
            and o.user_attrs["flops"] <= t.user_attrs["flops"]
            and (accuracy(o), o.user_attrs["flops"]) != (accuracy(t), t.user_attrs["flops"])
            for o in trials
        )

    return sorted((t for t in trials if not dominated(t)), key=lambda t: t.user_attrs["flops"])


def choose(trials: list[FrozenTrial], budget: int | None, budget_text: str | None) -> FrozenTrial:
    """The most accurate trial within the budget (fewer FLOPs on a tie)."""
    if not trials:
        raise ConfigError("the study has no complete trained trial yet: run the search first")
    fitting = [t for t in trials if budget is None or t.user_attrs["flops"] <= budget]
    if not fitting:
        cheapest = min(t.user_attrs["flops"] for t in trials)
        raise ConfigError(
            f"budget.flops={budget_text}: no complete trial fits {budget:,} multiply-accumulates; "
            f"the cheapest costs {cheapest:,}"
        )
    return max(fitting, key=lambda t: (accuracy(t), -t.user_attrs["flops"]))


def front_rows(front: list[FrozenTrial], chosen: FrozenTrial) -> list[list[str]]:
    return [
        [
            f"{t.number}{' (selected)' if t.number == chosen.number else ''}",
            f"{accuracy(t) * 100:.2f}",
            f"{t.user_attrs['flops']:,}",
            f"{t.user_attrs['params']:,}",
            " ".join(t.user_attrs["overrides"]),
        ]
        for t in front
    ]


def replay_overrides(study: optuna.Study) -> list[str]:
    """The search command's own overrides that still apply to the exported model (data, trainer...)."""
    return [o for o in study.user_attrs.get("base_overrides", []) if not o.startswith(MODEL_KEYS)]


def export(out: Path, chosen: FrozenTrial, front: list[FrozenTrial]) -> None:
    """Write model/selected.yaml, selected.ckpt and pareto.csv into `out`, all or nothing."""
    with staged_output(out, marker="model/selected.yaml") as staging:
        (staging / "model").mkdir()
        model = {k: v for k, v in chosen.user_attrs["model"].items() if k != "name"}
        header = (
            f"# Selected from trial {chosen.number}: val/acc {accuracy(chosen):.4f}, "
            f"{chosen.user_attrs['flops']:,} MACs, {chosen.user_attrs['params']:,} params\n"
        )
        (staging / "model" / "selected.yaml").write_text(header + yaml.safe_dump(model, sort_keys=False))
        if chosen.user_attrs.get("checkpoint"):
            shutil.copyfile(chosen.user_attrs["checkpoint"], staging / "selected.ckpt")
        rows = [trial_row(t) for t in front]
        write_csv(staging / "pareto.csv", [{k: v for k, v in r.items() if k not in ("state", "trained")} for r in rows])


def retrain(out: Path, overrides: list[str], seeds: int) -> str:
    """Retrain the exported model with seeds 0..seeds-1; mean ± std of val and test top-1."""
    from search.config import compose_config
    from search.train import train

    results = []
    for seed in range(seeds):
        cfg = compose_config(f"hydra.searchpath=[file://{out.resolve()}]", "model=selected", *overrides, f"seed={seed}")
        results.append(train(cfg, out / "retrain" / f"seed_{seed}")["metrics"])
    lines = [f"Retrained with {seeds} seeds:"]
    for metric in ("val/acc", "test/acc"):
        values = [r[metric] * 100 for r in results]
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        lines.append(f"  {metric}: {statistics.fmean(values):.2f}{spread} %")
    return "\n".join(lines)


def run(argv: list[str]) -> str:
    """The command's report (raises ConfigError on bad input)."""
    options = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_study(options["search.storage"], options["search.study_name"])
    budget = parse_flops(options["budget.flops"])
    trials = trained(study)
    chosen = choose(trials, budget, options["budget.flops"])
    front = pareto_front(trials)
    out = Path(options["out"])
    export(out, chosen, front)
    overrides = replay_overrides(study)
    command = ["python", "-m", "search.run", "--config-dir", str(out), "model=selected", *overrides]
    lines = [
        f"Pareto front of study {study.study_name} (val top-1 against FLOPs as multiply-accumulates):",
        markdown_table(["trial", "val top-1 (%)", "FLOPs (MACs)", "params", "overrides"], front_rows(front, chosen)),
        f"Selected trial {chosen.number}: val/acc {accuracy(chosen):.4f}, {chosen.user_attrs['flops']:,} MACs"
        + (f" (budget {budget:,})" if budget else ""),
        f"Wrote {out / 'model' / 'selected.yaml'}, {out / 'selected.ckpt'}, {out / 'pareto.csv'}",
        "Replay: " + shlex.join(command),
    ]
    if options["retrain.seeds"]:
        lines.append(retrain(out, overrides, options["retrain.seeds"]))
    return "\n".join(lines)


def main() -> None:
    """Entry point: the report, or one error line on stderr with exit code 2."""
    run_main(run)


if __name__ == "__main__":
    main()
