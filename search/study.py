"""`python -m search.run search=optuna budget.flops=3M ...`: Optuna search under a FLOP budget.

Each worker runs `study.optimize` one trial at a time (so heartbeats and stale-trial retry work) and
stops when `search.n_trials` trials have been trained in the whole study. A candidate's FLOPs come
from the closed form before anything is built; over-budget ones are recorded and never trained.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

import blocks
from search.config import check_choice, check_int, compose_config, prepare
from search.errors import ConfigError
from search.loggers import log_tables
from search.module import DivergedError
from search.space import (
    Dimension,
    candidate_cost,
    describe,
    dry_run_report,
    parse_flops,
    parse_space,
    smallest_candidate,
    suggest,
    to_overrides,
)
from search.storage import open_storage, storage_url, study_name
from search.train import train

WORKER_ENV = "BLOCKSEARCH_WORKER"  # index of a worker process started by `search.workers=N`
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SEARCH_KEYS = ("search=", "search.", "budget.", "+search", "+budget")


class CandidateFailed(Exception):
    """A trial that ends without a result: invalid candidate, diverged training, or no slot left."""


@dataclass
class SearchContext:
    """Everything a worker needs to turn a trial into a trained candidate."""

    cfg: DictConfig
    argv: list[str]
    dims: list[Dimension]
    base: dict[str, Any]
    resolution: int
    budget: int | None
    study_dir: Path
    trained_last: bool = False

    @property
    def n_trials(self) -> int:
        return self.cfg.search.n_trials

    @property
    def pareto(self) -> bool:
        return self.cfg.search.objective == "pareto"


def base_overrides(argv: list[str]) -> list[str]:
    """The user's overrides that are not about the search itself (a trial's config starts from them)."""
    return [
        a
        for a in argv
        if not a.startswith(SEARCH_KEYS) and (a.startswith("hydra.searchpath=") or not a.startswith(("hydra", "-")))
    ]


def make_sampler(cfg: DictConfig, dims: list[Dimension], base: dict[str, Any]) -> optuna.samplers.BaseSampler:
    """TPE (constant liar for parallel workers), NSGA-II, random or grid, seeded per worker."""
    seed = cfg.search.seed + int(os.environ.get(WORKER_ENV, 0))
    kind = cfg.search.sampler
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    stages = len(base["depths"])
    grid = {}
    for dim in dims:
        names = [f"{dim.key}.{i + 1}" for i in range(stages)] if dim.per_stage else [dim.key]
        grid.update({name: dim.values() for name in names})
    return optuna.samplers.GridSampler(grid, seed=seed)


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """Median or Hyperband on val/acc per epoch; never for the multi-objective search."""
    kind = cfg.search.pruner
    if kind == "none" or cfg.search.objective == "pareto":
        return optuna.pruners.NopPruner()
    if kind == "median":
        # judge a trial only once its first quarter of epochs is done: early epochs rank trials poorly
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(2, cfg.trainer.max_epochs // 4))
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=cfg.trainer.max_epochs)


def record_candidate(trial: optuna.Trial, ctx: SearchContext, cx: blocks.Complexity, overrides: list[str]) -> None:
    """Store what the candidate is and costs, and tell the sampler its constraint (feasible where <= 0)."""
    replay = ["python", "-m", "search.run", *base_overrides(ctx.argv), *overrides]
    trial.set_user_attr("flops", cx.flops)
    trial.set_user_attr("params", cx.params)
    trial.set_user_attr("model", cx.spec.to_dict())
    trial.set_user_attr("overrides", overrides)
    trial.set_user_attr("replay", " ".join(shlex.quote(a) for a in replay))
    trial.set_constraint("flops", float(cx.flops - ctx.budget) if ctx.budget else 0.0)


def trained_twin(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
    """A complete trained trial with exactly this trial's parameters, if the study has one."""
    done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return next((t for t in done if t.user_attrs.get("trained") and t.params == trial.params), None)


def claim_slot(trial: optuna.Trial, ctx: SearchContext) -> None:
    """Mark the trial as one to train, then check that at most n_trials are: write, then read.

    Whichever of two racing workers reads last sees the other's mark, so the study never trains
    more than n_trials; a trial that finds no slot fails as skipped and its worker waits.
    """
    trial.set_user_attr("trained", True)
    others = [
        t
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED))
        if t.user_attrs.get("trained") and t.number != trial.number
    ]
    if len(others) >= ctx.n_trials:
        trial.set_user_attr("trained", False)
        trial.set_user_attr("fail_reason", "skipped: other workers hold all search.n_trials slots")
        raise CandidateFailed("skipped: no trial slot left")


def objective(trial: optuna.Trial, ctx: SearchContext) -> float | tuple[float, float]:
    """Suggest, cost in closed form, reject over budget, else build the config, train, report val/acc."""
    ctx.trained_last = False
    params = suggest(trial, ctx.dims, ctx.base)
    overrides = to_overrides(params, ctx.base)
    try:
        cx = candidate_cost(ctx.base, params, ctx.resolution)
    except ValueError as error:
        trial.set_user_attr("fail_reason", f"invalid candidate: {error}")
        trial.set_user_attr("overrides", overrides)
        raise CandidateFailed(str(error)) from None
    record_candidate(trial, ctx, cx, overrides)
    if ctx.budget is not None and cx.flops > ctx.budget:
        trial.set_user_attr("over_budget", True)
        trial.set_user_attr("trained", False)
        trial.set_user_attr("train_s", 0.0)
        return (0.0, float(cx.flops)) if ctx.pareto else 0.0
    twin = trained_twin(trial)
    if twin is not None:  # samplers revisit small discrete spaces: tell the known result, train nothing
        trial.set_user_attr("trained", False)
        trial.set_user_attr("duplicate_of", twin.number)
        trial.set_user_attr("train_s", 0.0)
        return tuple(twin.values) if ctx.pareto else twin.values[0]
    claim_slot(trial, ctx)
    accuracy = train_candidate(trial, ctx, overrides, cx)
    ctx.trained_last = True
    return (accuracy, float(cx.flops)) if ctx.pareto else accuracy


def train_candidate(trial: optuna.Trial, ctx: SearchContext, overrides: list[str], cx: blocks.Complexity) -> float:
    """Train the trial's config with `train()`, pruning on val/acc; returns the best val/acc."""
    from optuna_integration import PyTorchLightningPruningCallback

    cfg = compose_config(*base_overrides(ctx.argv), *overrides)
    trial.set_user_attr("config", OmegaConf.to_container(cfg, resolve=True))
    run_dir = ctx.study_dir / f"trial_{trial.number}"
    callbacks = () if ctx.pareto else (PyTorchLightningPruningCallback(trial, monitor="val/acc"),)
    start = time.perf_counter()
    trial.set_user_attr("run_dir", str(run_dir))
    try:
        results = train(cfg, run_dir, callbacks=callbacks, group=ctx.study_dir.name, overrides=overrides)
    except DivergedError as error:
        trial.set_user_attr("fail_reason", f"diverged: {error}")
        raise CandidateFailed(str(error)) from None
    finally:
        trial.set_user_attr("train_s", round(time.perf_counter() - start, 3))
        trial.set_user_attr("checkpoint", _best_checkpoint(run_dir))
    if results["flops"] != cx.flops:  # the composed config must build the candidate that was costed
        raise RuntimeError(f"trial {trial.number}: composed config costs {results['flops']} MACs, not {cx.flops}")
    trial.set_user_attr("metrics", results["metrics"])
    return results["metrics"].get("val/acc_best", results["metrics"]["val/acc"])


def _best_checkpoint(run_dir: Path) -> str | None:
    found = sorted((run_dir / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def trained_counts(study: optuna.Study) -> tuple[int, int]:
    """(finished trained trials, trained trials finished or running) in the whole study."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED))
        if t.user_attrs.get("trained")
    ]
    return sum(t.state in FINISHED for t in trials), len(trials)


def worker_loop(study: optuna.Study, ctx: SearchContext) -> None:
    """Run trials until the study holds n_trials trained ones; no batch barrier between workers."""
    untrained_in_a_row = 0
    while True:
        finished, claimed = trained_counts(study)
        if finished >= ctx.n_trials:
            return
        if claimed >= ctx.n_trials:  # the last slots are being trained elsewhere; one may still fail
            time.sleep(min(5, ctx.cfg.search.heartbeat_s))
            optuna.storages.fail_stale_trials(study)
            continue
        if untrained_in_a_row >= ctx.cfg.search.max_candidates:
            raise ConfigError(
                f"search.max_candidates={ctx.cfg.search.max_candidates}: that many candidates in "
                "a row were over budget, invalid or diverged; raise budget.flops or narrow the space"
            )
        # Another worker may judge a slow trial stale and fail it first: it is retried (optuna #5582).
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            study.optimize(lambda trial: objective(trial, ctx), n_trials=1, catch=(CandidateFailed,))
        untrained_in_a_row = 0 if ctx.trained_last else untrained_in_a_row + 1


def check_settings(cfg: DictConfig, dims: list[Dimension]) -> None:
    """Validate the `search.*` settings and their interplay with the command's shortcuts."""
    for key in ("n_trials", "workers", "heartbeat_s", "dry_run_samples", "max_candidates"):
        check_int(cfg, f"search.{key}", 1)
    check_int(cfg, "search.gpus_per_trial", 0)
    check_int(cfg, "search.seed", 0)
    check_choice(cfg, "search.objective", ("accuracy", "pareto"))
    check_choice(cfg, "search.pruner", ("median", "hyperband", "none"))
    sampler = check_choice(cfg, "search.sampler", ("tpe", "nsga2", "random", "grid"))
    if sampler == "grid" and any(d.if_block for d in dims):
        raise ConfigError("search.sampler=grid: the space has conditional dimensions (if_block); use tpe or random")
    if str(cfg.trainer.strategy).startswith("ddp"):
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy}: a search trains each trial in one process; "
            "scale out with search.workers=N and search.gpus_per_trial instead"
        )
    for dim in dims:
        shortcut = dim.key.removeprefix("model.")
        if shortcut in ("expansion", "depths", "widths") and cfg.get(shortcut) is not None:
            raise ConfigError(
                f"{shortcut}={cfg[shortcut]}: fixes a field the search space varies ({dim.key}); "
                f"drop it or remove {dim.key} from search.space"
            )


def make_context(cfg: DictConfig, argv: list[str]) -> SearchContext:
    """Validate the search and find, before anything trains, whether any model fits the budget."""
    space = cfg.search.space
    dims = parse_space(OmegaConf.to_container(space, resolve=True) if OmegaConf.is_config(space) else space)
    check_settings(cfg, dims)
    budget = parse_flops(cfg.budget.flops)
    parts = prepare(cfg)
    base = parts.spec.to_dict()
    resolution = parts.datamodule.resolution
    smallest = smallest_candidate(dims, base, resolution)
    if budget is not None and smallest.flops > budget:
        raise ConfigError(
            f"budget.flops={cfg.budget.flops}: no model in the search space fits {budget:,} multiply-accumulates; "
            f"the smallest costs {smallest.flops:,} ({describe(smallest.spec)})"
        )
    name = study_name(cfg, argv)
    return SearchContext(cfg, argv, dims, base, resolution, budget, Path("runs") / name)


def open_study(ctx: SearchContext) -> optuna.Study:
    """Create the study, or load it to resume."""
    cfg = ctx.cfg
    name = ctx.study_dir.name
    storage = open_storage(storage_url(cfg, name), cfg.search.heartbeat_s)
    directions = ["maximize", "minimize"] if ctx.pareto else ["maximize"]
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=directions,
        load_if_exists=True,
        sampler=make_sampler(cfg, ctx.dims, ctx.base),
        pruner=make_pruner(cfg),
    )
    study.set_user_attr("budget_flops", ctx.budget)
    study.set_user_attr("objective", cfg.search.objective)
    study.set_user_attr("resolution", ctx.resolution)
    study.set_user_attr("base_overrides", base_overrides(ctx.argv))
    return study


def spawn_workers(ctx: SearchContext) -> None:
    """`search.workers=N`: N processes running this command as single workers on the same storage."""
    gpus = ctx.cfg.search.gpus_per_trial
    procs = []
    for index in range(ctx.cfg.search.workers):
        env = dict(os.environ, **{WORKER_ENV: str(index)})
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index * gpus + g) for g in range(gpus))
        argv = [a for a in ctx.argv if not a.startswith("search.workers=")] + ["search.workers=1"]
        procs.append(subprocess.Popen([sys.executable, "-m", "search.run", *argv], env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(max(codes))


def run_search(cfg: DictConfig, argv: list[str]) -> None:
    """Entry point for `search.kind=optuna`: dry run, or search until n_trials are trained."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ctx = make_context(cfg, argv)
    if cfg.search.dry_run:
        search = cfg.search
        print(dry_run_report(ctx.dims, ctx.base, ctx.resolution, ctx.budget, search.dry_run_samples, search.seed))
        return
    study = open_study(ctx)
    if cfg.search.workers > 1 and WORKER_ENV not in os.environ:
        spawn_workers(ctx)
    else:
        worker_loop(study, ctx)
    if WORKER_ENV not in os.environ:
        log_study(study, ctx)
        print(summary(study, ctx))


def log_study(study: optuna.Study, ctx: SearchContext) -> None:
    """The study-level W&B run: every candidate, and the Pareto front of accuracy against FLOPs (MACs)."""
    from search.select import pareto_front, trained, trial_row

    tables = {
        "trials": [trial_row(t) for t in study.get_trials(deepcopy=False)],
        "pareto_front": [trial_row(t) for t in pareto_front(trained(study))],
    }
    log_tables(ctx.cfg.logger, ctx.study_dir, name=f"{study.study_name}-study", group=study.study_name, tables=tables)


def summary(study: optuna.Study, ctx: SearchContext) -> str:
    """What the study holds now, and the command that selects from it."""
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if t.user_attrs.get("trained") and t.state in FINISHED]
    rejected = [t for t in trials if t.user_attrs.get("over_budget")]
    duplicates = sum("duplicate_of" in t.user_attrs for t in trials)
    storage = storage_url(ctx.cfg, ctx.study_dir.name)
    lines = [
        f"Study {study.study_name}: {len(trained)} trained trials "
        f"({sum(t.state == TrialState.PRUNED for t in trained)} pruned), {len(rejected)} over-budget candidates "
        f"rejected without training, {duplicates} repeats of a trained candidate answered from it, "
        f"{sum(t.state == TrialState.FAIL for t in trials)} failed."
    ]
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.values[0])
        lines.append(
            f"Best: trial {best.number}, val/acc {best.values[0]:.4f}, {best.user_attrs['flops']:,} MACs, "
            f"{best.user_attrs['params']:,} params: {best.user_attrs['replay']}"
        )
    budget = f" budget.flops={ctx.cfg.budget.flops}" if ctx.budget else ""
    lines.append(
        f"Select: python -m search.select search.storage={storage} search.study_name={study.study_name}"
        f"{budget} out=chosen/"
    )
    return "\n".join(lines)
