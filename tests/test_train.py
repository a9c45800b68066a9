"""`train(cfg)` on real composed configs and real (small) data."""

import json
import os
import shutil
import time
import warnings
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.profilers import SimpleProfiler
from torch import nn

import blocks
from search.config import prepare
from search.data import DigitsDataModule, digits_train_size
from search.loggers import make_logger
from search.module import Classifier
from search.train import EpochCheckpoint, NoProfiler, build_trainer, train
from tests.helpers import make_cfg, read_csv, write_cifar10, write_image_folder

TINY_RESNET = ["model=resnet20", "depths=[1,1,1]"]


def test_results_json_fields_and_complexity(tmp_path):
    results = train(make_cfg("logger=csv", "expansion=8"), run_dir=tmp_path)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == results
    expected = blocks.complexity("digits", resolution=8, expansion=8)
    assert (results["params"], results["flops"]) == (expected.params, expected.flops)
    assert results["model"]["expansion"] == 8 and results["seed"] == 0
    assert {"val/acc", "val/acc_top5", "val/loss", "test/acc", "test/acc_top5", "test/loss"} <= set(results["metrics"])
    assert torch.load(results["best_checkpoint"], weights_only=False)["state_dict"]
    logged = read_csv(tmp_path / "csv" / "metrics.csv")
    assert any(row["val/acc"] for row in logged)
    # every logged training step reached the file, though it is written in batches
    train_steps = [int(row["step"]) for row in logged if row["train/loss"]]
    assert train_steps == list(range(9, train_steps[-1] + 1, 10)) and train_steps[-1] >= 29
    # history.csv holds each epoch's own validation metrics, as the logger got them, the last one included
    val_logged = {row["epoch"]: float(row["val/acc"]) for row in logged if row["val/acc"]}
    history = {row["epoch"]: float(row["val/acc"]) for row in read_csv(tmp_path / "history.csv")}
    assert history == val_logged and history["1"] == results["metrics"]["val/acc"]


def test_same_seed_reproduces_metrics_exactly(tmp_path):
    first = train(make_cfg("seed=3"), run_dir=tmp_path / "a")["metrics"]
    second = train(make_cfg("seed=3"), run_dir=tmp_path / "b")["metrics"]
    other = train(make_cfg("seed=4"), run_dir=tmp_path / "c")["metrics"]
    assert first == second
    assert first["val/loss"] != other["val/loss"]


def test_resume_from_checkpoint_continues_training(tmp_path):
    start = time.perf_counter()
    first = train(make_cfg(), run_dir=tmp_path / "a")
    assert first["wall_s"] <= time.perf_counter() - start  # testing the best checkpoint adds none of its time
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=False)
    assert before["callbacks"]["WallClock"]["wall_s"] > 0
    before["callbacks"]["WallClock"]["wall_s"] = 1000.0  # as if the first run had taken that long to get there
    torch.save(before, last)
    start = time.perf_counter()
    resumed = train(make_cfg("trainer.max_epochs=3", f"ckpt_path={last}", "logger=csv"), run_dir=tmp_path / "b")
    assert 1000.0 < resumed["wall_s"] <= 1000.0 + time.perf_counter() - start
    after = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (before["epoch"], after["epoch"]) == (1, 2)
    assert after["global_step"] == before["global_step"] * 3 // 2
    trained_epochs = {row["epoch"] for row in read_csv(tmp_path / "b" / "csv" / "metrics.csv") if row["val/acc"]}
    assert trained_epochs == {"2"}  # only the third epoch ran after resuming


def test_last_checkpoint_is_every_epoch_and_resume_drops_rows_of_epochs_trained_again(tmp_path):
    seen = []

    class LastEpoch(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch:
                seen.append(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["epoch"])
            if trainer.current_epoch == 2:
                shutil.copy(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "epoch1.ckpt")

    csv_every_step = ["trainer.max_epochs=4", "logger=csv", "logger.flush_logs_every_n_steps=1", "probe=gradflow"]
    # a learning rate too small to improve val/acc: Lightning's save_last would keep the first epoch's
    train(make_cfg(*csv_every_step, "optim.optimizer.lr=1e-9"), run_dir=tmp_path, callbacks=(LastEpoch(),))
    assert seen == [0, 1, 2]
    # as if the run had been killed after writing epoch 3's rows but saving epoch 1's checkpoint:
    # resuming trains epochs 2 and 3 again, and their earlier rows go
    train(make_cfg(*csv_every_step, f"ckpt_path={tmp_path / 'epoch1.ckpt'}"), run_dir=tmp_path)
    assert [row["epoch"] for row in read_csv(tmp_path / "history.csv")] == ["0", "1", "2", "3"]
    logged = read_csv(tmp_path / "csv" / "metrics.csv")
    assert [row["epoch"] for row in logged if row["val/acc"]] == ["0", "1", "2", "3"]
    steps = [int(row["step"]) for row in logged]
    assert steps == sorted(steps) and len(logged) > 4  # the train/loss rows too, each once
    flows = read_csv(tmp_path / "gradflow.csv")
    written = [(row["step"], row["block"]) for row in flows]
    assert len(written) == len(set(written)) and {row["epoch"] for row in flows} == {"0", "1", "2", "3"}


def test_channels_last_trains_with_nhwc_weights(tmp_path):
    # trainer=gpu turns it on; the CPU runs the same code path.
    train(make_cfg("trainer.channels_last=true", "trainer.max_epochs=1"), run_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    weight = state["net.layer1.0.conv2.weight"]  # (16, 16, 3, 3): NHWC and NCHW strides differ
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.1, 0.2), (0.33, 0.33), (0.05, 0.01)])
def test_digits_batch_check_knows_the_split_scikit_learn_makes(val, test):
    # the batch-size check runs before any data is loaded, so it computes the split's size
    loaded = DigitsDataModule(val_fraction=val, test_fraction=test).load()
    assert len(loaded["train"][1]) == digits_train_size(val, test)


def test_cifar10_from_torchvision_format(tmp_path):
    root = write_cifar10(tmp_path / "data")
    cfg = make_cfg(
        "data=cifar10",
        f"data.root={root}",
        "data.num_workers=0",
        "data.val_size=20",
        "data.batch_size=16",
        "trainer.max_epochs=1",
        *TINY_RESNET,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train(cfg, run_dir=tmp_path / "run")
    assert not [w for w in caught if "pin_memory" in str(w.message)]  # pinning is for CUDA copies only
    assert results["resolution"] == 32 and results["model"]["num_classes"] == 10
    assert results["flops"] == blocks.complexity("resnet20", resolution=32, depths=[1, 1, 1]).flops
    assert 0 <= results["metrics"]["test/acc"] <= 1


@pytest.mark.parametrize(("accelerator", "pinned"), [(CUDAAccelerator(), True), (CPUAccelerator(), False)])
def test_file_loaders_pin_memory_for_cuda_only(tmp_path, accelerator, pinned):
    cfg = make_cfg("data=cifar10", f"data.root={write_cifar10(tmp_path)}", "data.val_size=20", "data.batch_size=16")
    datamodule = prepare(cfg).datamodule
    datamodule.setup("fit")
    datamodule.trainer = SimpleNamespace(accelerator=accelerator)
    assert datamodule.train_dataloader().pin_memory is pinned


@pytest.mark.parametrize(("cpus", "workers"), [(2, 2), (32, 8)])
def test_file_loaders_default_to_a_worker_per_cpu_at_most_8(tmp_path, monkeypatch, cpus, workers):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    data = ["data=imagefolder", f"data.root={write_image_folder(tmp_path)}"]
    assert make_cfg(*data).data.num_workers == "auto"
    assert prepare(make_cfg(*data)).datamodule.num_workers == workers
    # an explicit count is kept, even above the CPUs
    assert prepare(make_cfg(*data, "data.num_workers=3")).datamodule.num_workers == 3


def test_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "data")
    cfg = make_cfg(
        "data=imagefolder",
        f"data.root={root}",
        "data.num_workers=0",
        "data.resolution=32",
        "data.batch_size=6",
        "trainer.max_epochs=1",
        *TINY_RESNET,
    )
    results = train(cfg, run_dir=tmp_path / "run")
    assert results["model"]["num_classes"] == 3 and results["resolution"] == 32
    assert "test/acc" in results["metrics"]


def test_gradflow_probe_has_a_row_per_block_per_logged_step(tmp_path):
    cfg = make_cfg("probe=gradflow", "trainer.max_epochs=1", "trainer.log_every_n_steps=4", "depths=[2,1]")
    train(cfg, run_dir=tmp_path)
    rows = read_csv(tmp_path / "gradflow.csv")
    steps_per_epoch = 1257 // 64  # digits' train split, last partial batch dropped
    logged_steps = range(3, steps_per_epoch, 4)  # Lightning writes steps 4, 8, ... (0-based 3, 7, ...)
    assert [(int(r["step"]), r["block"]) for r in rows] == [
        (step, block) for step in logged_steps for block in ("layer1.0", "layer1.1", "layer2.0")
    ]
    assert all(float(r["output_grad_norm"]) > 0 and float(r["branch_grad_norm"]) > 0 for r in rows)


def test_gradflow_splits_the_input_gradient_into_branch_and_skip(tmp_path):
    # With every block's last BN gamma at zero the branch passes no gradient back at the first step:
    # the whole input gradient flows through the skip (the identity), as the design notes argue.
    cfg = make_cfg(
        "probe=gradflow",
        "trainer.max_epochs=1",
        "model.zero_init_residual=true",
        "depths=[2,1]",
        "trainer.log_every_n_steps=1",
    )
    train(cfg, run_dir=tmp_path)
    first_step = [r for r in read_csv(tmp_path / "gradflow.csv") if r["step"] == "0"]
    assert len(first_step) == 3
    assert all(float(r["branch_grad_norm"]) == 0 and float(r["skip_grad_norm"]) > 0 for r in first_step)


@pytest.mark.parametrize("logger", ["csv", "none", "wandb"])
def test_loggers(tmp_path, logger, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    train(make_cfg(f"logger={logger}", "trainer.max_epochs=1"), run_dir=tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"csv": "csv" in written, "none": not written & {"csv", "wandb"}, "wandb": "wandb" in written}[logger]
    if logger == "wandb":
        assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_run_stopped_by_an_exception_closes_its_wandb_run(tmp_path, monkeypatch):
    # A pruned or diverged trial raises out of fit; the search's next trial in the process needs its own run.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")

    class Stop(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            raise RuntimeError("stopped early")

    with pytest.raises(RuntimeError, match="stopped early"):
        train(make_cfg("logger=wandb"), run_dir=tmp_path / "stopped", callbacks=(Stop(),))
    train(make_cfg("logger=wandb", "trainer.max_epochs=1"), run_dir=tmp_path / "next")
    assert list((tmp_path / "next" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_csv_logger_writes_rows_in_batches_and_all_at_the_end(tmp_path):
    logger = make_logger({"kind": "csv", "flush_logs_every_n_steps": 100}, tmp_path, name="run", group="g")
    written = tmp_path / "csv" / "metrics.csv"
    for step in range(9, 100, 10):  # the trainer saves after every log call
        logger.log_metrics({"train/loss": 1.0}, step=step)
        logger.save()
    assert not written.exists()  # rows span 91 steps: not yet
    logger.log_metrics({"train/loss": 1.0}, step=109)
    logger.save()
    assert [row["step"] for row in read_csv(written)] == [str(s) for s in range(9, 110, 10)]
    logger.log_metrics({"val/acc": 0.5}, step=110)
    logger.save()
    logger.finalize("success")
    assert read_csv(written)[-1] == {"step": "110", "train/loss": "", "val/acc": "0.5"}


def test_csv_logger_of_a_resumed_run_appends_to_the_rows_before_it(tmp_path):
    first = make_logger({"kind": "csv"}, tmp_path, name="run", group="g")
    first.log_metrics({"train/loss": 1.0, "epoch": 0}, step=9)
    first.finalize("success")
    resumed = make_logger({"kind": "csv"}, tmp_path, name="run", group="g")  # same folder, as a resumed job
    resumed.log_metrics({"val/acc": 0.5, "epoch": 1}, step=19)
    resumed.finalize("success")
    assert read_csv(tmp_path / "csv" / "metrics.csv") == [
        {"epoch": "0", "step": "9", "train/loss": "1.0", "val/acc": ""},
        {"epoch": "1", "step": "19", "train/loss": "", "val/acc": "0.5"},
    ]


def test_epoch_checkpoint_still_saves_on_a_step_interval(tmp_path):
    # EpochCheckpoint skips Lightning's per-step checks only when no step or time interval asks for a save.
    cfg = make_cfg()
    parts = prepare(cfg)
    module = Classifier(blocks.build_model(parts.spec), parts.spec.num_classes, instantiate(cfg.optim.optimizer))
    every_10 = EpochCheckpoint(dirpath=tmp_path, every_n_train_steps=10, save_top_k=-1, filename="{step}")
    trainer = pl.Trainer(max_epochs=1, callbacks=[every_10], logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=parts.datamodule)
    assert "step=10.ckpt" in {p.name for p in tmp_path.iterdir()}


def test_lightning_profiler_only_when_configured(tmp_path):
    assert isinstance(build_trainer(make_cfg(), tmp_path, False, []).profiler, NoProfiler)
    configured = build_trainer(make_cfg("trainer.profiler=simple"), tmp_path, False, []).profiler
    assert isinstance(configured, SimpleProfiler)


def test_classifier_registers_attributes_like_any_module():
    # Classifier takes a shortcut for the attribute Lightning sets on every hook call, and only for it.
    module = Classifier(nn.Linear(4, 2), 2, torch.optim.SGD)
    module.head = nn.Linear(2, 2)
    module._current_fx_name = "training_step"
    assert "head" in dict(module.named_children()) and "head.weight" in dict(module.named_parameters())
    assert module._current_fx_name == "training_step" and "_current_fx_name" not in dict(module.named_children())
