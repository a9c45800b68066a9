"""`train(cfg) -> results`: one job of `python -m search.run`, callable from tests with a composed config."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.profilers import PassThroughProfiler
from omegaconf import DictConfig, OmegaConf

import blocks
from search.config import prepare, trainer_kwargs
from search.history import EpochHistory
from search.loggers import make_logger
from search.module import Classifier
from search.probes import make_probes

# Lightning calls a torch API that torch now marks deprecated, once per run; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
# Lightning advertises its cloud products ("💡 Tip: ...") on every Trainer it builds: once per job and per
# search trial. Its other messages stay.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip")
)


def job_identity() -> tuple[Path, str, str, list[str]]:
    """(output dir, run name, sweep group, task overrides) of the running Hydra job."""
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    group = "_".join(Path(hydra_cfg.sweep.dir).parts[-2:])  # multirun/DAY/TIME -> DAY_TIME
    overrides = list(hydra_cfg.overrides.task)
    return output_dir, "_".join(overrides) or "defaults", group, overrides


class NoProfiler(PassThroughProfiler):
    """Lightning's default no-op profiler without the context manager it builds around every hook call.

    Lightning profiles ~70 hook calls a training step, and building those generators costs ~35 us a step
    (measured): real time on the small networks a search trains. `trainer.profiler=simple` (or any
    Lightning profiler) replaces it.
    """

    def profile(self, action_name: str) -> contextlib.nullcontext:
        return contextlib.nullcontext(action_name)


class EpochCheckpoint(ModelCheckpoint):
    """ModelCheckpoint without two per-step costs of Lightning's (real time on the small networks a search trains).

    The state key is built once: Lightning formats it for every callback hook it calls, ~7 a training step,
    each time the repr of settings that never change after construction. And unless a step or time
    interval is set, nothing is saved at a training step: Lightning's trainer-state checks are skipped.
    """

    @functools.cached_property
    def state_key(self) -> str:
        return super().state_key

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            super().on_train_batch_end(trainer, module, *args)


class WallClock(pl.Callback):
    """Seconds since the job started, carried in its checkpoints: a job resumed from one counts the time its
    earlier run spent up to that checkpoint, so the ablation table's wall time does not shrink after a crash."""

    def __init__(self, start: float):
        self.start, self.earlier_s, self.stage = start, 0.0, None

    def elapsed_s(self) -> float:
        """Wall-clock seconds of this job, earlier runs up to the checkpoint it resumed from included."""
        return self.earlier_s + time.perf_counter() - self.start

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        self.stage = stage

    def state_dict(self) -> dict[str, float]:
        return {"wall_s": self.elapsed_s()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        if self.stage == "fit":  # testing the best checkpoint restores callbacks too: its time is not ours
            self.earlier_s = state_dict["wall_s"]


def build_trainer(cfg: DictConfig, run_dir: Path, logger: Any, extra: list[pl.Callback]) -> pl.Trainer:
    """A Lightning Trainer from `conf/trainer/`, checkpointing the best `val/acc` and the last epoch under `run_dir`."""
    kwargs = trainer_kwargs(cfg)
    refresh = cfg.trainer.progress_refresh
    callbacks = [
        EpochCheckpoint(dirpath=run_dir / "checkpoints", monitor="val/acc", mode="max", filename="best-{epoch}"),
        # every epoch, to resume from: Lightning's save_last saves only beside a new best
        EpochCheckpoint(dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False),
        EpochHistory(run_dir / "history.csv"),
        *extra,
    ]
    if refresh:
        callbacks.append(TQDMProgressBar(refresh_rate=refresh))
    profiler = kwargs.pop("profiler", None) or NoProfiler()
    return pl.Trainer(
        **kwargs,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=run_dir,
        enable_progress_bar=bool(refresh),
        enable_model_summary=False,
        profiler=profiler,
    )


def train(
    cfg: DictConfig,
    run_dir: Path | None = None,
    *,
    callbacks: tuple[pl.Callback, ...] = (),
    group: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train and test the model `cfg` describes; write and return `results.json` (FLOPs as MACs).

    Inside a Hydra job the run directory, W&B group and overrides come from Hydra; otherwise from
    the arguments (the search passes its trial's).
    """
    start = time.perf_counter()
    if run_dir is None:
        run_dir, name, group, overrides = job_identity()
    else:
        name, group, overrides = run_dir.name, group or run_dir.parent.name, overrides or []
    parts = prepare(cfg)
    parts.datamodule.setup("fit")  # what only the data can show wrong stops the job before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = blocks.build_model(parts.spec)
    cx = blocks.complexity(parts.spec, resolution=parts.datamodule.resolution)
    module = Classifier(
        net,
        parts.spec.num_classes,
        instantiate(cfg.optim.optimizer),
        cfg.optim.scheduler,
        cfg.optim.label_smoothing,
        channels_last=cfg.trainer.channels_last,
    )
    logger = make_logger(cfg.logger, run_dir, name=name, group=group)
    clock = WallClock(start)
    trainer = build_trainer(cfg, run_dir, logger, [clock, *make_probes(cfg.probe, run_dir), *callbacks])
    if logger:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True) | {"params": cx.params, "flops": cx.flops})
    ckpt_path = str(Path(str(cfg.ckpt_path)).expanduser()) if cfg.ckpt_path else None
    with warnings.catch_warnings():
        if ckpt_path and Path(ckpt_path).parent == run_dir / "checkpoints":  # a job resuming in its own folder
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        trainer.fit(module, datamodule=parts.datamodule, ckpt_path=ckpt_path)
    validated = _metrics(trainer, "val/")
    # the best checkpoint by path: "best" would warn that there are two checkpoint callbacks on every job
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.test(module, datamodule=parts.datamodule, ckpt_path=best, verbose=False)
    results = {
        "model": parts.spec.to_dict(),
        "params": cx.params,
        "flops": cx.flops,
        "flops_unit": "multiply-accumulates",
        "resolution": parts.datamodule.resolution,
        "metrics": _best_val(trainer) | validated | _metrics(trainer, "test/"),
        "seed": cfg.seed,
        "overrides": overrides,
        "wall_s": round(clock.elapsed_s(), 3),
        "best_checkpoint": trainer.checkpoint_callback.best_model_path,
    }
    if trainer.is_global_zero:
        _write_summary(logger, results)
        write_json(run_dir / "results.json", results)
    return results


def _metrics(trainer: pl.Trainer, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _best_val(trainer: pl.Trainer) -> dict[str, float]:
    best = trainer.checkpoint_callback.best_model_score
    return {"val/acc_best": float(best)} if best is not None else {}


def _write_summary(logger: Any, results: dict[str, Any]) -> None:
    if isinstance(logger, WandbLogger):
        logger.experiment.summary.update({"params": results["params"], "flops": results["flops"], **results["metrics"]})
        logger.experiment.finish()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or none, never half of one."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
