"""Experiment loggers from `conf/logger/`: W&B (offline unless it can reach its server), CSV or none."""

from __future__ import annotations

import csv
import netrc
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from search.errors import ConfigError

WANDB_HOST = "api.wandb.ai"


def wandb_mode() -> str:
    """'online' only with an API key and the server answering within a second; never waits longer."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return os.environ["WANDB_MODE"]
    if not (os.environ.get("WANDB_API_KEY") or _netrc_has_key()):
        return "offline"
    try:
        socket.create_connection((socket.gethostbyname(WANDB_HOST), 443), timeout=1).close()
    except OSError:
        return "offline"
    return "online"


def _netrc_has_key() -> bool:
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class BufferedCSVLogger(CSVLogger):
    """`metrics.csv` written once its unwritten rows span `flush_logs_every_n_steps` steps, and when the run ends.

    Lightning's trainer calls `save()` after every `log_metrics`, so the stock logger reopens and appends to
    its file on every logging step whatever `flush_logs_every_n_steps` says (lightning#4664, "won't fix"):
    real time on the small networks a search trains. A crash loses at most that many steps of rows;
    `history.csv` is written every epoch regardless. A run resumed in the same folder keeps the rows of the
    run it resumes, up to the checkpoint it resumes from (`EpochHistory` drops the rest).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """Lightning's writer, keeping the rows of a run this one resumes (the stock one deletes them)."""
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        kept = path.with_name(f".{path.name}.resumed")
        if path.is_file():
            path.rename(kept)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Previous log files in this directory will be deleted"
            experiment = super().experiment
        if kept.is_file():
            kept.rename(path)
            with open(path, newline="") as f:
                experiment.metrics_keys = next(csv.reader(f), [])
        return experiment

    @rank_zero_only
    def save(self) -> None:
        rows = self.experiment.metrics
        if rows and rows[-1]["step"] - rows[0]["step"] + 1 >= self._flush_logs_every_n_steps:
            super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            super().save()


class ClosingWandbLogger(WandbLogger):
    """WandbLogger that closes its run, with exit code 1, when training fails.

    Lightning finalizes its loggers with "failed" on any exception in fit or test (a pruned trial, a
    diverged loss), and the stock WandbLogger then leaves its run open: the next run in the same process
    (the search's next trial) would log into it.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        # Lightning always passes wandb.init an `anonymous` setting, which wandb has removed (wandb#10909):
        # wandb warns about it in every process that logs, and is due to reject it.
        self._wandb_init.pop("anonymous", None)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed" and self._experiment is not None:
            self._experiment.finish(exit_code=1)


def make_logger(cfg: dict[str, Any], run_dir: Path, *, name: str, group: str) -> Logger | bool:
    """The logger of `cfg` (a `conf/logger/` entry) writing under `run_dir`; False for none."""
    kind = cfg.get("kind")
    if kind == "none":
        return False
    if kind == "csv":
        return BufferedCSVLogger(
            save_dir=run_dir, name="", version="csv", flush_logs_every_n_steps=cfg.get("flush_logs_every_n_steps", 100)
        )
    if kind == "wandb":
        mode = wandb_mode()
        # wandb's own setting decides the mode; without it, it would try the network.
        os.environ["WANDB_MODE"] = mode
        return ClosingWandbLogger(
            save_dir=str(run_dir),
            project=cfg.get("project"),
            entity=cfg.get("entity"),
            name=name,
            group=group,
            offline=mode != "online",
            settings=_quiet_settings(),
        )
    raise ConfigError(f"logger.kind={kind!r}: allowed: wandb, csv, none")


def _quiet_settings():
    import wandb

    return wandb.Settings(silent=True, x_disable_stats=True, console="off")


def log_tables(
    cfg: dict[str, Any], run_dir: Path, *, name: str, group: str, tables: dict[str, list[dict[str, Any]]]
) -> None:
    """One W&B run (e.g. a study's summary) holding `tables`: {key: rows}, empty ones left out; no-op unless W&B."""
    if cfg.get("kind") != "wandb":
        return
    import wandb

    os.environ["WANDB_MODE"] = wandb_mode()
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=cfg.get("project"),
        entity=cfg.get("entity"),
        name=name,
        group=group,
        job_type="study",
        dir=str(run_dir),
        settings=_quiet_settings(),
    )
    run.log(
        {
            key: wandb.Table(columns=list(rows[0]), data=[list(row.values()) for row in rows])
            for key, rows in tables.items()
            if rows
        }
    )
    run.finish()
