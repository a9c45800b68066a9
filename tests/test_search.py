"""The Optuna search as a user runs it: budget, resume after SIGKILL, NaN trials, Pareto and selection."""

import signal
import subprocess
import sys
import time
import warnings

import optuna
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

import blocks
from tests.helpers import FAST, crashing_run, read_csv

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def load(tmp_path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/study.db")


def search_args(tmp_path, name, *extra):
    return [
        "search=optuna",
        f"search.study_name={name}",
        f"search.storage=sqlite:///{tmp_path}/study.db",
        *FAST,
        *extra,
    ]


def trained(study):
    return [t for t in study.trials if t.user_attrs.get("trained") and t.state in FINISHED]


@pytest.mark.slow
def test_budget_search_trains_exactly_n_trials_under_budget(cli, tmp_path):
    result = cli("search.run", *search_args(tmp_path, "budget", "budget.flops=3M", "search.n_trials=12"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path, "budget")
    done = trained(study)
    assert len(done) == 12
    assert all(t.user_attrs["flops"] <= 3_000_000 for t in done)
    rejected = [t for t in study.trials if t.user_attrs.get("over_budget")]
    assert rejected and all(t.user_attrs["flops"] > 3_000_000 and t.user_attrs["train_s"] == 0 for t in rejected)
    assert all(t.user_attrs["flops"] <= 3_000_000 for t in study.trials if t not in rejected)
    repeats = [t for t in study.trials if "duplicate_of" in t.user_attrs]  # answered from a trained twin
    assert all(study.trials[t.user_attrs["duplicate_of"]].params == t.params for t in repeats)
    assert not any((tmp_path / "runs" / "budget" / f"trial_{t.number}").exists() for t in rejected)
    # every candidate told the sampler its constraint, and the FLOPs recorded are the closed form's
    assert all(t.constraints == {"flops": t.user_attrs["flops"] - 3_000_000} for t in study.trials)
    for t in done[:3]:
        assert t.user_attrs["flops"] == blocks.complexity(t.user_attrs["model"], resolution=8).flops
        assert t.user_attrs["config"]["trainer"]["max_epochs"] == 2 and t.user_attrs["replay"].startswith("python")
    assert "12 trained trials" in result.stdout and "search.select" in result.stdout


def test_dry_run_trains_nothing(cli, tmp_path):
    result = cli(
        "search.run",
        "search=optuna",
        "budget.flops=3M",
        "search.dry_run=true",
        "search.dry_run_samples=2000",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "2,000 candidates sampled" in result.stdout and "Under budget.flops=3,000,000 MACs" in result.stdout
    assert "smallest: 503,040 MACs" in result.stdout  # bottleneck, expansion 8, one block per stage
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["budget.flops=100K"],
            "budget.flops=100K: no model in the search space fits 100,000 multiply-accumulates; "
            "the smallest costs 503,040",
        ),
        (["budget.flops=lots"], "budget.flops='lots': expected multiply-accumulates > 0"),
        (["search.storage=postgresql+psycopg://nobody@127.0.0.1:1/none"], "search.storage=postgresql+psycopg://nobody"),
        (
            ["search.storage=sqlite:////no/such/dir/study.db"],
            "search.storage=sqlite:////no/such/dir/study.db: cannot open",
        ),
        (["search.sampler=annealing"], "search.sampler='annealing': allowed: tpe, nsga2, random, grid"),
        (["search.pruner=asha"], "search.pruner='asha': allowed: median, hyperband, none"),
        (["search=families", "search.sampler=grid"], "search.sampler=grid: the space has conditional dimensions"),
        (["search.space=wide"], "search.space='wide': expected config paths with their dimensions"),
        (["search.space={model.expansion:3}"], "search.space.model.expansion=3: expected {choices: [...]} or {low"),
        (
            ["search.space.model.expansion={choices:[2,4]}"],  # the space's keys hold dots: Hydra cannot reach them
            "search.space.model.expansion: unknown field 'model'; allowed: model.expansion, model.depths; "
            "set them as search.space={model.expansion:{...}}",
        ),
        (["expansion=2"], "expansion=2: fixes a field the search space varies (model.expansion)"),
        (["expansion=2,4"], "search=optuna: a search samples its own candidates"),
        (["trainer=ddp"], "trainer.strategy=ddp: a search trains each trial in one process"),
    ],
)
def test_search_input_errors(cli, tmp_path, args, message):
    result = cli("search.run", "search=optuna", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # no study database, no trial folders


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume(tmp_path):
    settings = ["search.n_trials=3", "search.heartbeat_s=1", "search.pruner=none", "budget.flops=3M"]
    args = search_args(tmp_path, "crash", *settings, "trainer.max_epochs=30")
    # killed in epoch 4 of the second trained trial
    crashing = crashing_run(tmp_path, *args, fit=2, epoch=3)
    crashed = subprocess.run(crashing, cwd=tmp_path, capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    # Restart as a user would, after the dead trial went stale (4 silent 1 s heartbeats): a quicker restart
    # samples new candidates first, and one of those may repeat the killed trial's parameters and train
    # them, so that the retry is answered from that twin rather than trained.
    time.sleep(5)
    before = load(tmp_path, "crash")
    (killed,) = [t for t in before.trials if t.state == TrialState.RUNNING]
    assert len(killed.intermediate_values) == 3
    finished_before = {t.number: t.values for t in trained(before)}
    assert len(finished_before) == 1
    command = [sys.executable, "-m", "search.run", *args]
    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = load(tmp_path, "crash")
    done = trained(after)
    assert len(done) == 3
    assert {t.number: t.values for t in done if t.number in finished_before} == finished_before
    assert after.trials[killed.number].state == TrialState.FAIL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = [t for t in after.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params and retried[0] in done


@pytest.mark.slow
def test_nan_trial_fails_with_reason_and_study_goes_on(cli, tmp_path):
    result = cli(
        "search.run",
        *search_args(
            tmp_path,
            "nan",
            "search.n_trials=3",
            "search.sampler=random",
            "+search.space.optim.optimizer.lr={choices:[0.1,1.0e9]}",
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    study = load(tmp_path, "nan")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["fail_reason"].startswith("diverged: ") for t in failed)
    assert all(t.params["optim.optimizer.lr"] == 1.0e9 for t in failed)
    assert len(trained(study)) == 3


@pytest.mark.slow
def test_pareto_search_select_export_and_replay(cli, tmp_path):
    result = cli(
        "search.run",
        *search_args(
            tmp_path, "front", "search.objective=pareto", "search.sampler=nsga2", "search.n_trials=4", "budget.flops=3M"
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"search.storage=sqlite:///{tmp_path}/study.db"
    nothing = cli("search.select", storage, "search.study_name=front", "budget.flops=1K", "out=none", cwd=tmp_path)
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: budget.flops=1K: no complete trial fits")
    assert not (tmp_path / "none").exists()
    chosen = cli("search.select", storage, "search.study_name=front", "out=chosen", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    assert "Pareto front" in chosen.stdout and "(selected)" in chosen.stdout
    out = tmp_path / "chosen"
    assert {p.name for p in out.iterdir()} >= {"model", "selected.ckpt", "pareto.csv"}
    model = yaml.safe_load((out / "model" / "selected.yaml").read_text())
    study = load(tmp_path, "front")
    selected = next(
        t
        for t in study.trials
        if t.user_attrs.get("model", {}).get("depths") == model["depths"]
        and t.user_attrs["model"]["expansion"] == model["expansion"]
    )
    assert blocks.complexity(model, resolution=8).flops == selected.user_attrs["flops"]
    front = read_csv(out / "pareto.csv")
    assert list(front[0]) == ["trial", "val_acc", "flops_macs", "params", "overrides"]
    assert str(selected.number) in {row["trial"] for row in front}
    replay = cli(
        "search.run",
        "--config-dir",
        str(out),
        "model=selected",
        f"hydra.sweep.dir={tmp_path}/replay",
        *FAST,
        cwd=tmp_path,
    )
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert f"{selected.user_attrs['flops']:,}" in replay.stdout


@pytest.mark.slow
def test_three_workers_fill_one_postgresql_study(cli, tmp_path, postgres_url):
    args = [
        "search=optuna",
        "search.study_name=shared",
        f"search.storage={postgres_url}",
        "search.workers=3",
        "search.n_trials=6",
        "budget.flops=3M",
        *FAST,
    ]
    result = cli("search.run", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    done = trained(study)
    assert len(done) == 6
    # no trial trained twice: exactly one run directory per trained trial, none for any other
    run_dirs = {p.name for p in (tmp_path / "runs" / "shared").glob("trial_*")}
    assert run_dirs == {f"trial_{t.number}" for t in done}
    assert len({t.number for t in done}) == 6
