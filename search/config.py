"""Turning a composed Hydra config into validated parts: every bad value fails here, before any work."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.strategies import StrategyRegistry
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

import blocks
from blocks.spec import is_int, is_number
from search.errors import ConfigError

MODEL_SHORTCUTS = ("expansion", "depths", "widths")

# Every model field with its default, under the chosen preset: `model.FIELD=` works for all of them.
ConfigStore.instance().store(
    group="schema",
    name="model",
    package="model",
    node={k: v for k, v in blocks.ModelSpec().to_dict().items() if k != "name"},
)
SCHEDULERS = ("cosine", "none")
TRAINER_EXTRAS = ("channels_last", "progress_refresh")  # ours, not Lightning Trainer arguments


@dataclass
class Parts:
    """What a job is built from: the data module and the validated model spec."""

    datamodule: pl.LightningDataModule
    spec: blocks.ModelSpec


def compose_config(*overrides: str) -> DictConfig:
    """The config `python -m search.run OVERRIDES` composes for one job (for tests, benchmarks, tools)."""
    with initialize_config_module("conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def check_count(key: str, value: object, minimum: int, why: str = "") -> int:
    """`value` if it is an integer >= `minimum` (booleans are not), else a ConfigError naming `key`;
    `why` ends the message."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}{why}")
    return value


def check_int(cfg: DictConfig, key: str, minimum: int, why: str = "") -> int:
    """The integer >= `minimum` at dotted `key`, or a ConfigError naming it (`why` ends its message)."""
    return check_count(key, OmegaConf.select(cfg, key), minimum, why)


def check_number(cfg: DictConfig, key: str, low: float, high: float = math.inf, *, low_open: bool = False) -> float:
    """The number at dotted `key` in [low, high) (or (low, high)), or a ConfigError naming it."""
    value = OmegaConf.select(cfg, key)
    if not is_number(value) or value < low or value >= high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g})"
        raise ConfigError(f"{key}={value!r}: expected a number in {interval}")
    return value


def check_choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> str:
    """The value at dotted `key` if it is one of `allowed`, or a ConfigError naming it."""
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r}: allowed: {', '.join(allowed)}")
    return value


def preset_choice() -> str:
    """The `model=` preset of the running Hydra job (its spec's name), or 'custom' outside one."""
    return HydraConfig.get().runtime.choices.get("model", "custom") if HydraConfig.initialized() else "custom"


def model_fields(cfg: DictConfig) -> dict[str, Any]:
    """The model node with the top-level shortcuts (`expansion=`, ...) applied."""
    fields = OmegaConf.to_container(cfg.model, resolve=True) | {"name": preset_choice()}
    fields.update({key: cfg[key] for key in MODEL_SHORTCUTS if cfg.get(key) is not None})
    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in fields.items()}


def _check_trainer(cfg: DictConfig) -> None:
    check_int(cfg, "trainer.max_epochs", 1)
    check_int(cfg, "trainer.num_nodes", 1)
    check_int(cfg, "trainer.log_every_n_steps", 1)
    check_int(cfg, "trainer.progress_refresh", 0)
    if cfg.trainer.devices != "auto":
        check_int(cfg, "trainer.devices", 1, " or auto")
    check_choice(cfg, "trainer.accelerator", ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())))
    check_choice(cfg, "trainer.strategy", ("auto", *StrategyRegistry.available_strategies()))


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments of Lightning's `Trainer` in `conf/trainer/` (our extras left out)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in TRAINER_EXTRAS:
        kwargs.pop(key)
    return kwargs


def check_trainer_runs_here(cfg: DictConfig) -> None:
    """The trainer's accelerator and devices exist on this machine, and Lightning accepts every trainer setting.

    For jobs that run on this machine: Lightning would otherwise reject them only once the job has started.
    Lightning's own checks run by building the job's Trainer (without logger, callbacks or checkpoints).
    """
    _check_accelerator_here(cfg.trainer.accelerator, cfg.trainer.devices)
    try:
        with warnings.catch_warnings(), _quiet("lightning.pytorch"):
            warnings.simplefilter("ignore")  # the job itself warns, once
            pl.Trainer(
                **trainer_kwargs(cfg),
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    except (ValueError, TypeError, MisconfigurationException) as error:
        raise ConfigError(f"trainer: {' '.join(str(error).split())}") from None


def _check_accelerator_here(name: str, devices: int | str) -> None:
    if name in ("auto", "cpu"):  # CPU "devices" are processes: any number runs
        return
    kinds = ("cuda", "mps") if name == "gpu" else (name,)  # Lightning's "gpu" is whichever of these exists
    usable = [AcceleratorRegistry[kind]["accelerator"] for kind in kinds]
    usable = [accelerator for accelerator in usable if accelerator.is_available()]
    if not usable:
        here = ", ".join(k for k in sorted(AcceleratorRegistry) if AcceleratorRegistry[k]["accelerator"].is_available())
        raise ConfigError(f"trainer.accelerator={name}: not available on this machine; available here: {here}")
    count = usable[0].auto_device_count()
    if isinstance(devices, int) and devices > count:
        raise ConfigError(f"trainer.devices={devices}: this machine has {count} {name} device(s)")


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_optim(cfg: DictConfig) -> None:
    check_number(cfg, "optim.optimizer.lr", 0, low_open=True)
    check_number(cfg, "optim.label_smoothing", 0, 1)
    check_choice(cfg, "optim.scheduler", SCHEDULERS)
    try:  # the optimizer's own checks of its arguments (momentum, betas, ...), on a stand-in parameter
        _instantiate(cfg.optim.optimizer, "optim.optimizer")([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optim.optimizer: {error}") from None


def _instantiate(node: DictConfig, key: str) -> Any:
    """`hydra.utils.instantiate`, with the target's own ValueError (or TypeError) as the error."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ValueError):
            raise cause from None
        raise ConfigError(f"{key}: {cause or error}".splitlines()[0]) from None


def prepare(cfg: DictConfig) -> Parts:
    """Validate `cfg` and build its data module (nothing loaded) and model spec."""
    check_int(cfg, "seed", 0)
    _check_trainer(cfg)
    _check_optim(cfg)
    if cfg.ckpt_path is not None and not Path(str(cfg.ckpt_path)).expanduser().is_file():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    datamodule = _instantiate(cfg.data, "data")
    fields = model_fields(cfg) | {"in_channels": datamodule.in_channels, "num_classes": datamodule.num_classes}
    return Parts(datamodule, blocks.make_spec(fields))
