"""Where studies live: their default name and storage, and opening an Optuna storage safely."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.storages import RetryHeartbeatStaleTrialCallback

from search.errors import ConfigError

# Settings of how a search runs, not of what it searches: they do not change the study's name.
RUN_ONLY_KEYS = (
    "search.n_trials=",
    "search.workers=",
    "search.dry_run",
    "search.storage=",
    "search.heartbeat_s=",
    "search.gpus_per_trial=",
    "search.max_candidates=",
    "hydra.",
    "hydra/",
)


def study_name(cfg: DictConfig, argv: list[str]) -> str:
    """`search.study_name`, or SPACE_BUDGET_HASH of the command, so rerunning it finds the same study."""
    if cfg.search.study_name:
        return str(cfg.search.study_name)
    budget = str(cfg.budget.flops) if cfg.budget.flops is not None else "nobudget"
    what = sorted(a for a in argv if not a.startswith(RUN_ONLY_KEYS))
    digest = hashlib.sha1(" ".join(what).encode()).hexdigest()[:6]
    return f"{cfg.search.name}_{budget}_{digest}"


def storage_url(cfg: DictConfig, name: str) -> str:
    """`search.storage`, or SQLite in runs/STUDY/ (created)."""
    if cfg.search.storage:
        return str(cfg.search.storage)
    folder = Path("runs") / name
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'study.db'}"


def open_storage(url: str, heartbeat_s: int, *, existing: bool = False) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (a dead trial is failed after 4 silent beats and retried).

    With `existing` (the commands that read studies), a SQLite file must already be there: opening one
    would otherwise create an empty database wherever a mistyped path points.
    """
    if existing:
        _check_sqlite_file(url)
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine["connect_args"] = {"timeout": 120}  # several workers queue on SQLite's lock
    else:
        engine.update(pool_size=2, max_overflow=2)  # the trial and its heartbeat thread, per process
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable in use
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=heartbeat_s,
                grace_period=4 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
            )
    except Exception as error:  # sqlalchemy's many connection errors, an unknown dialect, a bad path
        reason = " ".join(str(error).split("\n")[0].split())[:300]
        raise ConfigError(f"search.storage={url}: cannot open it ({type(error).__name__}: {reason})") from None


def _check_sqlite_file(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # not a URL: opening it reports that
    database = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if on_disk and not Path(database).is_file():
        raise ConfigError(f"search.storage={url}: no such database file ({Path(database).resolve()})")
