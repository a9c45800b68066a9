"""`python -m search.run` as a user runs it: sweeps, the ablation table, DDP, and bad input."""

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_module

import blocks
from search.ablation import ablation_rows
from search.run import CONFIG_MODULE, hydra_settings, launcher_name
from tests.helpers import crashing_run, read_csv, write_cifar10

QUIET = ["logger=none", "trainer.progress_refresh=0"]


def sweep_results(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/results.json"))]


@pytest.mark.slow
def test_demo_sweep_trains_three_models_and_prints_the_table(cli, tmp_path):
    result = cli(
        "search.run", "block=bottleneck", "expansion=2,4,8", f"hydra.sweep.dir={tmp_path}", *QUIET, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = sweep_results(tmp_path)
    assert len(results) == 3
    for r in results:
        expected = blocks.complexity("digits", resolution=8, expansion=r["model"]["expansion"])
        assert (r["params"], r["flops"]) == (expected.params, expected.flops)
        assert r["metrics"]["test/acc"] >= 0.95
        assert f"| expansion={r['model']['expansion']} " in result.stdout
        assert f"{expected.flops:,}" in result.stdout
    assert (tmp_path / "ablation.csv").is_file() and (tmp_path / "ablation.md").is_file()


def test_default_wandb_logger_runs_offline_and_quietly(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    result = cli(
        "search.run", "trainer.max_epochs=1", "trainer.progress_refresh=0", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "0" / "wandb").glob("offline-run-*/run-*.wandb"))
    output = result.stdout + result.stderr
    assert "wandb: WARNING" not in output and "💡 Tip" not in output  # Lightning's advert


@pytest.mark.slow
def test_a_killed_sweep_rerun_skips_finished_jobs_and_resumes_the_killed_one(cli, tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "expansion=2,4",
        "trainer.max_epochs=30",
        "logger=csv",
        "trainer.progress_refresh=0",
        f"hydra.sweep.dir={sweep}",
    ]
    # killed as job 1 starts its ninth epoch, after metrics.csv was first written (at step 100, in epoch 5)
    first = subprocess.run(crashing_run(tmp_path, *args, fit=2, epoch=8), cwd=tmp_path, capture_output=True)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert not (sweep / "1" / "results.json").exists()
    finished = (sweep / "0" / "results.json").read_text()
    metrics = sweep / "1" / "csv" / "metrics.csv"
    logged_before = {r["epoch"] for r in read_csv(metrics) if r["val/acc"]}
    assert logged_before and torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 7

    result = cli("search.run", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{sweep / '0'}: finished by an earlier run" in result.stdout
    assert f"{sweep / '1'}: resuming from {sweep / '1' / 'checkpoints' / 'last.ckpt'}" in result.stdout
    assert "exists and is not empty" not in result.stderr and "multiple `ModelCheckpoint`" not in result.stderr
    assert (sweep / "0" / "results.json").read_text() == finished  # not trained again
    assert "| expansion=2 " in result.stdout and "| expansion=4 " in result.stdout
    # every epoch is recorded once across the two runs; the killed run's logged rows are kept
    assert [int(r["epoch"]) for r in read_csv(sweep / "1" / "history.csv")] == list(range(30))
    logged = {r["epoch"] for r in read_csv(metrics) if r["val/acc"]}
    assert logged_before <= logged and {str(epoch) for epoch in range(8, 30)} <= logged


def test_a_sweep_dir_holding_other_results_is_refused(cli, tmp_path):
    job = tmp_path / "sweep" / "0"
    job.mkdir(parents=True)
    (job / "results.json").write_text(json.dumps({"overrides": ["expansion=8"], "metrics": {}}))
    result = cli("search.run", "expansion=2", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: hydra.sweep.dir={tmp_path / 'sweep'}: job 0 there holds the results of 'expansion=8'; "
        "rerun that sweep to resume it, or choose a new sweep dir\n"
    )
    assert json.loads((job / "results.json").read_text())["overrides"] == ["expansion=8"]


def test_table_accuracies_are_of_the_tested_checkpoint():
    # the last epoch's val/acc (0.5) would pair the test accuracy with other weights than the ones tested
    metrics = {"val/acc": 0.5, "val/acc_best": 0.9, "test/acc": 0.8}
    result = {"overrides": ["expansion=2"], "params": 1, "flops": 2, "metrics": metrics, "wall_s": 3.0}
    (row,) = ablation_rows([result])
    assert (row["val top-1 (%)"], row["test top-1 (%)"]) == ("90.00", "80.00")


@pytest.mark.slow
def test_seeds_aggregate_to_mean_and_std(cli, tmp_path):
    result = cli(
        "search.run",
        "expansion=2,8",
        "seed=0,1",
        "trainer.max_epochs=3",
        f"hydra.sweep.dir={tmp_path}",
        *QUIET,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_csv(tmp_path / "ablation.csv")
    assert [(r["setting"], r["seeds"]) for r in rows] == [("expansion=2", "2"), ("expansion=8", "2")]
    # both accuracies are of the checkpoint the test evaluated: the best val epoch's
    for column, metric in (("test top-1 (%)", "test/acc"), ("val top-1 (%)", "val/acc_best")):
        by_setting = {}
        for r in sweep_results(tmp_path):
            by_setting.setdefault(r["model"]["expansion"], []).append(r["metrics"][metric] * 100)
        for row in rows:
            accs = by_setting[int(row["setting"].split("=")[1])]
            mean, std = (float(x) for x in row[column].split(" ± "))
            assert mean == pytest.approx(sum(accs) / 2, abs=0.006)
            assert std == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5, abs=0.006)  # sample std of two values


@pytest.mark.slow
def test_ddp_on_cpu_with_two_processes(cli, tmp_path):
    result = cli(
        "search.run",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.max_epochs=8",
        "logger=csv",
        "trainer.progress_refresh=0",
        f"hydra.sweep.dir={tmp_path}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (results,) = sweep_results(tmp_path)
    assert {"model", "params", "flops", "metrics", "seed", "wall_s", "best_checkpoint"} <= set(results)
    assert results["metrics"]["test/acc"] > 0.8
    val_rows = [row for row in read_csv(tmp_path / "0" / "csv" / "metrics.csv") if row["val/acc"]]
    assert len(val_rows) == 8  # once per epoch, not once per process
    assert not list(tmp_path.glob("0/csv_*")) and len(list(tmp_path.glob("*/results.json"))) == 1


BAD_INPUT = {
    "block=nosuch": "block=nosuch: unknown option; allowed: basic, bottleneck, inverted, resnext, se",
    "data=nosuch": "data=nosuch: unknown option; allowed: cifar10, cifar100, digits, fake, imagefolder",
    "expansion=0": "model.expansion=0: expected a number > 0",
    "expansion=abc": "model.expansion='abc': expected a number > 0",
    "block=basic expansion=4": "model.expansion=4: does not apply to block 'basic' (allowed: 1)",
    "trainer.max_epochs=abc": "trainer.max_epochs='abc': expected an integer >= 1",
    "seed=-x": "seed='-x': expected an integer >= 0",
    "data=cifar10": "data.root is missing: set data.root=DIR",
    "data=imagefolder data.root=/no/such/dir": "data.root=/no/such/dir: no such folder",
    "ckpt_path=/no/such.ckpt": "ckpt_path=/no/such.ckpt: no such checkpoint file",
    "model.colour=red": "model.colour: unknown field 'colour'; allowed: block, widths",
    "expansion=2,4,3": "model.expansion=3: stage 1 width 64 / expansion 3",
    "optim.optimizer.lr=0": "optim.optimizer.lr=0: expected a number in (0, inf)",
    "trainer.devices=0": "trainer.devices=0: expected an integer >= 1 or auto",
    "trainer.accelerator=nosuch": "trainer.accelerator='nosuch': allowed: auto, gpu, cpu, cuda, mps, tpu",
    "trainer.strategy=nosuch": "trainer.strategy='nosuch': allowed: auto, ddp, ddp_spawn",
    "trainer.accelerator=mps": "trainer.accelerator=mps: not available on this machine; available here: cpu",
    # Lightning's own checks, before the sweep starts
    "trainer.precision=bf17": "trainer: Precision 'bf17' is invalid. Allowed precision values: (",
    "trainer.profiler=nosuch": "trainer: When passing string value for the `profiler` parameter of `Trainer`",
    "+trainer.colour=red": "trainer: Trainer.__init__() got an unexpected keyword argument 'colour'",
    "hydra/launcher=submitit_slurm": "hydra/launcher=submitit_slurm: no SLURM here (srun not found)",
    "optim.optimizer.momentum=-1": "optim.optimizer: Invalid momentum value: -1",
    "+optim.optimizer.colour=red": "optim.optimizer: SGD.__init__() got an unexpected keyword argument 'colour'",
    "data.batch_size=1258": "data.batch_size=1258: larger than the training split (1257 samples)",
    "data=fake data.size=3": "data.size=3: expected an integer >= 4 (val and test hold a quarter each)",
    "data=imagefolder data.root=. data.num_workers=-1": "data.num_workers=-1: expected an integer >= 0 or auto",
}


@pytest.mark.parametrize("args", sorted(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, tmp_path, args):
    result = cli("search.run", *args.split(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {BAD_INPUT[args]}" or (
        result.stderr.startswith(f"error: {BAD_INPUT[args]}") and len(result.stderr.strip().splitlines()) == 1
    )
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no multirun/ or outputs/ half-written


def test_a_batch_larger_than_a_data_set_on_disk_is_an_error_line_exit_2(cli, tmp_path):
    # Known only once the job reads the data: the job stops with one line, before training.
    root = write_cifar10(tmp_path / "data", per_batch=10)  # 50 training images, 25 of them held out for val
    args = ["data=cifar10", f"data.root={root}", "data.batch_size=32", "data.num_workers=0", "model=resnet20"]
    sweep = tmp_path / "runs" / "sweep"
    result = cli("search.run", *args, *QUIET, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "error: data.batch_size=32: larger than the training split (25 samples)\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]  # Hydra's job and sweep folders went
    # a job folder an earlier run left work in stays as it was
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "history.csv").write_text("epoch\n0\n")
    assert cli("search.run", *args, *QUIET, f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 2
    assert (sweep / "0" / "history.csv").read_text() == "epoch\n0\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_trainer_without_a_gpu_is_one_line_exit_2_and_writes_nothing(cli, tmp_path):
    for launcher in ("basic", "submitit_local"):  # both run their jobs on this machine
        result = cli("search.run", "trainer=gpu", f"hydra/launcher={launcher}", cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith("error: trainer.accelerator=gpu: not available on this machine")
        assert len(result.stderr.splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_launcher_name_tells_local_launchers_from_cluster_ones():
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        assert launcher_name(hydra_settings([])) == "BasicLauncher"
        local = ["hydra/launcher=submitit_local", "hydra.sweep.dir=/tmp/x"]
        assert launcher_name(hydra_settings(local)) == "LocalLauncher"
        assert launcher_name(hydra_settings(["hydra/launcher=submitit_slurm", "expansion=2,4"])) == "SlurmLauncher"


@pytest.mark.slow
def test_submitit_launcher_runs_each_job(cli, tmp_path):
    # submitit_local runs every job in its own process exactly as submitit_slurm does on a cluster,
    # only without the scheduler: the path a SLURM sweep takes through our code.
    result = cli(
        "search.run",
        "expansion=4,8",
        "hydra/launcher=submitit_local",
        "trainer.max_epochs=2",
        f"hydra.sweep.dir={tmp_path}",
        *QUIET,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(r["model"]["expansion"] for r in sweep_results(tmp_path)) == [4, 8]
    assert (tmp_path / "ablation.md").is_file() and "| expansion=8 " in result.stdout
