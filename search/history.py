"""`history.csv` in every run directory: epoch-level metrics for training curves, whatever the logger; and the
row helpers a run's CSV files share (appending, and dropping the epochs a resumed run trains again)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

HISTORY_COLUMNS = ["epoch", "step", "train/loss", "val/loss", "val/acc", "val/acc_top5"]


def drop_epochs_from(path: Path, epoch: int) -> None:
    """Rewrite the CSV file at `path` (if any) without its rows of epoch `epoch` and later.

    Called as training starts at epoch `epoch`: a run resumed from the checkpoint that ends epoch `epoch - 1`
    (or one restarted before its first checkpoint) trains those epochs again, and the rows an interrupted run
    wrote for them describe weights that were never saved, and would appear twice. Rows without an epoch
    (logged past Lightning, which adds it) stay.
    """
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if not row["epoch"] or float(row["epoch"]) < epoch]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, reader.fieldnames or [])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)  # a crash leaves the old file, never half of one


def append_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Append `rows` to the CSV file at `path`, writing the header of `columns` first if the file is new."""
    header = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, columns)
        if header:
            writer.writeheader()
        writer.writerows(rows)


class EpochHistory(pl.Callback):
    """Appends one row per validation epoch (rank zero only). As training starts it first drops the rows of
    the epochs about to be trained (again), from `history.csv` and from a CSV logger's `metrics.csv`."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        logged = [
            Path(lg.log_dir) / ExperimentWriter.NAME_METRICS_FILE for lg in trainer.loggers if isinstance(lg, CSVLogger)
        ]
        for path in (self.path, *logged):
            drop_epochs_from(path, trainer.current_epoch)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # not on_validation_epoch_end: callbacks get that hook before the module logs the epoch's metrics
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row |= {k: float(metrics[k]) for k in HISTORY_COLUMNS[2:] if k in metrics}
        append_rows(self.path, HISTORY_COLUMNS, [row])
