"""`history.csv` in every run directory: epoch-level metrics for training curves, whatever the logger."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl

HISTORY_COLUMNS = ["epoch", "step", "train/loss", "val/loss", "val/acc", "val/acc_top5"]


class EpochHistory(pl.Callback):
    """Appends one row per validation epoch (rank zero only)."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # A run resumed from a checkpoint trains the epochs after it again: rows an interrupted run wrote for
        # them describe weights that were never saved.
        if trainer.current_epoch == 0 or not trainer.is_global_zero or not self.path.exists():
            return
        with open(self.path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["epoch"]) < trainer.current_epoch]
        self._write(rows, mode="w")

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row |= {k: float(metrics[k]) for k in HISTORY_COLUMNS[2:] if k in metrics}
        self._write([row], mode="a")

    def _write(self, rows: list[dict], mode: str) -> None:
        """Rows into the file, opened with `mode` ("w" or "a"); the header goes at the top of a new file."""
        header = mode == "w" or not self.path.exists()
        with open(self.path, mode, newline="") as f:
            writer = csv.DictWriter(f, HISTORY_COLUMNS)
            if header:
                writer.writeheader()
            writer.writerows(rows)
