"""Training throughput of our Lightning path against a plain PyTorch loop, one run, as ratios.

Same network, data batches, batch size, optimiser and schedule on both sides; no validation.
Steady state is the median step time after the first (warm-up) epoch; the whole-run figure includes start-up.

    python benchmarks/training_throughput.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate

import blocks
from search.config import compose_config, prepare
from search.module import Classifier
from search.train import build_trainer

WORKLOADS = {  # name: (overrides, epochs); short digits epochs (0.2 s) need many to average the noise
    "digits network on digits": (["logger=csv"], 24),
    "resnet20 on 32x32 fake data": (["logger=csv", "model=resnet20", "data=fake", "data.size=1280"], 6),
}


def median_step(marks: list[float], steps_per_epoch: int) -> float:
    """Median step-to-step time after the first (warm-up) epoch: robust to a noisy, shared machine.

    Per step, so per-epoch work (checkpointing, which the plain loop does not do) stays out of it;
    the whole-run ratio includes it."""
    steady = marks[steps_per_epoch:]
    return statistics.median(b - a for a, b in zip(steady[:-1], steady[1:], strict=True))


class StepClock(pl.Callback):
    """Wall-clock time at the start of every training step."""

    def __init__(self):
        self.marks: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.marks.append(time.perf_counter())


def run_lightning(overrides: list[str], epochs: int, run_dir: Path) -> tuple[float, float, int]:
    """(steady seconds, whole seconds, steps per epoch) for our path."""
    start = time.perf_counter()
    cfg = compose_config(f"trainer.max_epochs={epochs}", "+trainer.limit_val_batches=0", *overrides)
    parts = prepare(cfg)
    pl.seed_everything(0, verbose=False)
    module = Classifier(blocks.build_model(parts.spec), parts.spec.num_classes, instantiate(cfg.optim.optimizer))
    clock = StepClock()
    trainer = build_trainer(cfg, run_dir, instantiate_logger(cfg, run_dir), [clock])
    trainer.fit(module, datamodule=parts.datamodule)
    steps = trainer.num_training_batches
    return median_step(clock.marks, steps), time.perf_counter() - start, steps


def instantiate_logger(cfg, run_dir):
    from search.loggers import make_logger

    return make_logger(cfg.logger, run_dir, name="bench", group="bench")


def run_plain(overrides: list[str], epochs: int) -> tuple[float, float, int]:
    """(steady seconds, whole seconds, steps per epoch) for a plain loop over the same batches."""
    start = time.perf_counter()
    cfg = compose_config(*overrides)
    parts = prepare(cfg)
    torch.manual_seed(0)
    net = blocks.build_model(parts.spec)
    parts.datamodule.setup("fit")
    batches = parts.datamodule.train_dataloader()
    optimizer = instantiate(cfg.optim.optimizer)(net.parameters())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(batches))
    loss_fn = torch.nn.CrossEntropyLoss()
    net.train()
    marks = []
    for _ in range(epochs):
        for images, labels in batches:
            marks.append(time.perf_counter())
            loss = loss_fn(net(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return median_step(marks, len(batches)), time.perf_counter() - start, len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    print(f"{'workload':30} {'plain steps/s':>14} {'ours steps/s':>13} {'steady ratio':>13} {'whole-run ratio':>16}")
    for name, (overrides, epochs) in WORKLOADS.items():
        plain, ours = [], []
        for _ in range(rounds):  # alternate, keep each side's best: the machine's noise only slows
            plain.append(run_plain(overrides, epochs))
            with tempfile.TemporaryDirectory() as tmp:
                ours.append(run_lightning(overrides, epochs, Path(tmp)))
        (plain_steady, plain_whole, _), (ours_steady, ours_whole, _) = min(plain), min(ours)
        print(
            f"{name:30} {1 / plain_steady:14.1f} {1 / ours_steady:13.1f} "
            f"{plain_steady / ours_steady:13.3f} {plain_whole / ours_whole:16.3f}"
        )


if __name__ == "__main__":
    main()
