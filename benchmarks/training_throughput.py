"""Training throughput of our Lightning path against a plain PyTorch loop, one run, as ratios.

Same network, data, batch size, optimiser and schedule everywhere; no validation. For reference it also
times a stock port: a LightningModule that logs its loss every step, fed by a DataLoader, default Trainer.

Steady state is the median step time after the first (warm-up) epoch. This shared machine's speed drifts
by 10-30% within seconds, so the steady ratios are paired as tightly as the loops allow: each Lightning run
carries its own plain loop, which trains one epoch of its own network before each of Lightning's epochs,
and the ratio compares the two medians of that run. The whole-run figure (start-up included) compares a
stand-alone run of our path with a stand-alone plain run of the same round: in a paired run the plain
epochs would warm the kernels up for Lightning's first epoch. The table gives each ratio's median over
rounds and its range.

With `--floor` it also times Lightning's own floor: our module in `Trainer(barebones=True)`.

    python benchmarks/training_throughput.py [--rounds-scale 1.0] [--floor]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

import blocks
from search.config import compose_config, prepare
from search.loggers import make_logger
from search.module import Classifier
from search.train import build_trainer

WORKLOADS = {  # name: (overrides, epochs, rounds)
    "digits network on digits": (["logger=csv"], 24, 9),
    "resnet20 on 32x32 fake data": (["logger=csv", "model=resnet20", "data=fake", "data.size=1280"], 6, 3),
}


TrainerFactory = Callable[[DictConfig, Path], pl.Trainer]


class Timing(NamedTuple):
    steady_s: float  # median seconds per step after the warm-up epoch
    whole_s: float  # seconds for the whole run, start-up included


class Run(NamedTuple):
    """Median seconds per step of a Lightning run and of the plain loop interleaved with it."""

    steady_s: float
    plain_steady_s: float


Fit = Callable[[Callable[[Iterable], "Clocked"]], int]  # trains on clocked(batches), returns steps per epoch


def median_step(marks: list[float], steps_per_epoch: int) -> float:
    """Median step-to-step time after the first (warm-up) epoch.

    Per step, so per-epoch work (checkpointing, the interleaved plain epochs) stays out of it."""
    steady = marks[steps_per_epoch:]
    return statistics.median(b - a for a, b in zip(steady[:-1], steady[1:], strict=True))


class Clocked:
    """Batches that record the wall-clock time each one is taken, after calling `before_epoch`.

    A step clock that adds no hook call to the loop it times: Lightning takes the next batch at the start
    of each step (and stops at the length, without exhausting the iterator)."""

    def __init__(self, batches: Iterable, marks: list[float], before_epoch: Callable[[], None] = lambda: None):
        self.batches, self.marks, self.before_epoch = batches, marks, before_epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator:
        self.before_epoch()
        for batch in self.batches:
            self.marks.append(time.perf_counter())
            yield batch


class PlainLoop:
    """The plain PyTorch loop: our network, batches, optimiser and per-step cosine schedule, nothing else."""

    def __init__(self, overrides: list[str], epochs: int):
        cfg = compose_config(*overrides)
        parts = prepare(cfg)
        torch.manual_seed(0)
        self.net = blocks.build_model(parts.spec)
        parts.datamodule.setup("fit")
        self.marks: list[float] = []
        self.batches = Clocked(parts.datamodule.train_dataloader(), self.marks)
        self.optimizer = instantiate(cfg.optim.optimizer)(self.net.parameters())
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=epochs * len(self.batches))
        self.loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(self) -> None:
        self.net.train()
        with torch.enable_grad():
            for images, labels in self.batches:
                loss = self.loss_fn(self.net(images), labels)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.schedule.step()

    def steady_s(self) -> float:
        return median_step(self.marks, len(self.batches))


def run_plain(overrides: list[str], epochs: int) -> Timing:
    """Steady and whole-run seconds for the plain loop on its own."""
    start = time.perf_counter()
    loop = PlainLoop(overrides, epochs)
    for _ in range(epochs):
        loop.epoch()
    return Timing(loop.steady_s(), time.perf_counter() - start)


def timed_fit(fit: Fit, before_epoch: Callable[[], None] = lambda: None) -> Timing:
    """Time `fit`, calling `before_epoch` before each of its epochs (its time counts in the whole run)."""
    marks: list[float] = []
    start = time.perf_counter()
    steps_per_epoch = fit(lambda batches: Clocked(batches, marks, before_epoch))
    return Timing(median_step(marks, steps_per_epoch), time.perf_counter() - start)


def paired_run(overrides: list[str], epochs: int, fit: Fit) -> Run:
    """Steady step times of `fit` and of a plain loop that trains an epoch before each of its epochs."""
    plain = PlainLoop(overrides, epochs)
    return Run(timed_fit(fit, plain.epoch).steady_s, plain.steady_s())


def classifier_fit(overrides: list[str], epochs: int, make_trainer: TrainerFactory) -> Fit:
    """Our LightningModule and data in the Trainer `make_trainer(cfg, run_dir)` builds."""

    def fit(clocked: Callable[[Iterable], Clocked]) -> int:
        cfg = compose_config(f"trainer.max_epochs={epochs}", "+trainer.limit_val_batches=0", *overrides)
        parts = prepare(cfg)
        pl.seed_everything(0, verbose=False)
        net = blocks.build_model(parts.spec)
        module = Classifier(net, parts.spec.num_classes, instantiate(cfg.optim.optimizer))
        batches = parts.datamodule.train_dataloader
        parts.datamodule.train_dataloader = lambda: clocked(batches())
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = make_trainer(cfg, Path(run_dir))
            trainer.fit(module, datamodule=parts.datamodule)
        return trainer.num_training_batches

    return fit


def our_trainer(cfg: DictConfig, run_dir: Path) -> pl.Trainer:
    """Our path: the Trainer every job and trial gets, with its logger, checkpoints and progress bar."""
    return build_trainer(cfg, run_dir, make_logger(cfg.logger, run_dir, name="bench", group="bench"), [])


def run_lightning(overrides: list[str], epochs: int) -> Run:
    """Our path, paired with a plain loop."""
    return paired_run(overrides, epochs, classifier_fit(overrides, epochs, our_trainer))


def run_lightning_alone(overrides: list[str], epochs: int) -> Timing:
    """Our path on its own, start-up included: the whole-run figure."""
    return timed_fit(classifier_fit(overrides, epochs, our_trainer))


def run_barebones(overrides: list[str], epochs: int) -> Run:
    """Lightning's own floor: our module in `Trainer(barebones=True)`, without callbacks, logging, checkpoints
    or progress bar (Lightning's mode for measuring its loop's overhead)."""

    def barebones(cfg: DictConfig, run_dir: Path) -> pl.Trainer:
        return pl.Trainer(
            max_epochs=epochs,
            barebones=True,
            limit_val_batches=0,
            accelerator=cfg.trainer.accelerator,
            devices=cfg.trainer.devices,
            default_root_dir=run_dir,
        )

    return paired_run(overrides, epochs, classifier_fit(overrides, epochs, barebones))


class StockClassifier(pl.LightningModule):
    """A first Lightning port of the plain loop: logs its loss on every step."""

    def __init__(self, net: torch.nn.Module, optimizer, total_steps: int):
        super().__init__()
        self.net, self.optimizer_factory, self.total_steps = net, optimizer, total_steps

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = F.cross_entropy(self.net(images), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def run_stock(overrides: list[str], epochs: int) -> Run:
    """The stock port, default Trainer, fed by a DataLoader."""

    def fit(clocked: Callable[[Iterable], Clocked]) -> int:
        cfg = compose_config(*overrides)
        parts = prepare(cfg)
        parts.datamodule.setup("fit")
        loader = DataLoader(
            TensorDataset(*parts.datamodule.splits["train"]),
            batch_size=cfg.data.batch_size,
            shuffle=True,
            drop_last=True,
        )
        pl.seed_everything(0, verbose=False)
        net = blocks.build_model(parts.spec)
        module = StockClassifier(net, instantiate(cfg.optim.optimizer), total_steps=epochs * len(loader))
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = pl.Trainer(max_epochs=epochs, logger=CSVLogger(run_dir), default_root_dir=run_dir)
            trainer.fit(module, train_dataloaders=clocked(loader))
        return len(loader)

    return paired_run(overrides, epochs, fit)


def summary(ratios: list[float]) -> str:
    """Median over rounds of a throughput ratio, with its range."""
    ratios = sorted(ratios)
    return f"{statistics.median(ratios):.3f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"


def steady_ratios(runs: list[Run]) -> list[float]:
    """Per run: the interleaved plain loop's step time over the Lightning run's (a throughput ratio)."""
    return [run.plain_steady_s / run.steady_s for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-scale", type=float, default=1.0, help="multiplies each workload's rounds")
    parser.add_argument("--floor", action="store_true", help="also time Lightning's barebones Trainer")
    args = parser.parse_args()
    lightning_sides = {"stock": run_stock, "ours": run_lightning} | ({"floor": run_barebones} if args.floor else {})
    rows = []
    for name, (overrides, epochs, rounds) in WORKLOADS.items():
        run_plain(overrides, epochs=2)  # first run in the process pays one-off costs: keep it out
        sides = {"plain": run_plain, "ours alone": run_lightning_alone} | lightning_sides
        results = {side: [] for side in sides}
        for i in range(max(1, round(rounds * args.rounds_scale))):
            order = list(sides)[i % len(sides) :] + list(sides)[: i % len(sides)]  # nobody always goes first
            for side in order:
                results[side].append(sides[side](overrides, epochs))
        plain, alone = results.pop("plain"), results.pop("ours alone")
        steps_per_s = [1 / statistics.median(t.steady_s for t in plain)]
        steps_per_s += [1 / statistics.median(run.steady_s for run in runs) for runs in results.values()]
        ratios = [summary(steady_ratios(runs)) for runs in results.values()]
        ratios.append(summary([p.whole_s / ours.whole_s for p, ours in zip(plain, alone, strict=True)]))
        rates = "".join(f"{rate:7.1f}" for rate in steps_per_s)
        rows.append(f"{name:28} {len(plain):6d}{rates}" + "".join(f"{r:>18}" for r in ratios))
    print("\nSteady training steps per second (median over rounds); ratios against the plain loop as")
    print("median over rounds (range), 1.0 = as fast as the plain loop.")
    headers = [f"{side} steady" for side in lightning_sides] + ["ours whole-run"]
    rate_headers = "".join(f"{side:>7}" for side in ["plain", *lightning_sides])
    print(f"{'workload':28} {'rounds':>6}{rate_headers}" + "".join(f"{h:>18}" for h in headers))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
