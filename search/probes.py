"""Training probes from `conf/probe/`; `gradflow` measures the design notes' "gradient highway"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from search.history import append_rows, drop_epochs_from
from search.module import is_logging_step

GRADFLOW_COLUMNS = ["epoch", "step", "block", "depth", "output_grad_norm", "branch_grad_norm", "skip_grad_norm"]


class GradientFlow(pl.Callback):
    """Per block and logged step: L2 norms of dL/d(output), and of dL/d(input) through branch and skip.

    dL/dx = branch part + skip part. A tensor hook on the block's input gives the sum, a backward
    hook on the branch's first layer the branch part; the skip part is their difference. Rows reach the CSV
    file at the end of each epoch; a resumed run drops those of the epochs it trains again.
    """

    def __init__(self, csv_path: Path):
        self.csv_path = csv_path
        self.rows: list[dict[str, Any]] = []
        self.handles: list[Any] = []
        self.pending: dict[str, dict[str, torch.Tensor]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int):
        if is_logging_step(trainer):
            for name, block in self._blocks(module):
                self._watch(name, block)

    @staticmethod
    def _blocks(module: pl.LightningModule) -> list[tuple[str, torch.nn.Module]]:
        net = module.net
        return [(f"{stage}.{i}", block) for stage in net.stage_names for i, block in enumerate(getattr(net, stage))]

    def _watch(self, name: str, block: torch.nn.Module) -> None:
        grads = self.pending.setdefault(name, {})

        def on_forward(_block, inputs, output):
            inputs[0].register_hook(lambda g: grads.__setitem__("input", g.detach()))
            output.register_hook(lambda g: grads.__setitem__("output", g.detach()))

        def on_branch_backward(_layer, grad_input, _grad_output):
            grads["branch"] = grad_input[0].detach()

        self.handles += [
            block.register_forward_hook(on_forward),
            block.branch_entry().register_full_backward_hook(on_branch_backward),
        ]

    def on_after_backward(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not self.handles:
            return
        for handle in self.handles:
            handle.remove()
        self.handles = []
        for depth, (name, grads) in enumerate(self.pending.items()):
            if len(grads) < 3:  # the stem's input needs no gradient: the first block's input may lack one
                continue
            skip = grads["input"] - grads["branch"]
            row = {
                "epoch": trainer.current_epoch,
                "step": trainer.global_step,
                "block": name,
                "depth": depth,
                "output_grad_norm": grads["output"].norm().item(),
                "branch_grad_norm": grads["branch"].norm().item(),
                "skip_grad_norm": skip.norm().item(),
            }
            self.rows.append(row)
            if trainer.logger:
                # with the epoch, as Lightning logs its own metrics: a resumed run drops rows by epoch
                metrics = {f"gradflow/{name}/{k}": row[k] for k in GRADFLOW_COLUMNS[4:]}
                trainer.logger.log_metrics(metrics | {"epoch": row["epoch"]}, step=trainer.global_step)
        self.pending = {}

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            drop_epochs_from(self.csv_path, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero and self.rows:
            append_rows(self.csv_path, GRADFLOW_COLUMNS, self.rows)
        self.rows = []


def make_probes(cfg: dict[str, Any], run_dir: Path) -> list[pl.Callback]:
    """Callbacks for `conf/probe/` entry `cfg`."""
    return [GradientFlow(run_dir / "gradflow.csv")] if cfg.get("kind") == "gradflow" else []
