"""Reports as a person sees them (headless Chromium), their errors, and the live dashboard."""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest

from tests.conftest import free_port, run_module
from tests.helpers import FAST, render_page

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def search_run(folder, *args):
    """`python -m search.run ARGS` in `folder` (shortened training, quiet), which must succeed."""
    result = run_module("search.run", *args, *FAST, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    return search_run(folder, "expansion=2,8", "seed=0,1", "probe=gradflow", f"hydra.sweep.dir={folder}")


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    storage = f"search.storage=sqlite:///{folder}/study.db"
    search_run(
        folder,
        "search=families",
        "budget.flops=2M",
        "search.n_trials=5",
        "search.pruner=none",
        "search.study_name=fam",
        storage,
    )
    return folder / "study.db"


def check_rendered(report_dir, workdir, expected):
    figures = re.findall(r'<figure id="([a-z_]+)"', (report_dir / "index.html").read_text())
    assert figures == expected
    dom, shot = render_page(report_dir / "index.html", workdir)
    assert f'data-figures="{len(expected)}"' in dom
    assert dom.count('class="plot-container plotly"') == len(expected)  # plotly drew every figure
    assert dom.count('class="main-svg"') >= len(expected)
    assert "data-js-errors" not in dom
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 50_000
    for name in expected:
        png = (report_dir / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 15_000


@pytest.mark.slow
def test_sweep_report(cli, sweep_dir, tmp_path):
    result = cli("search.report", str(sweep_dir), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = sweep_dir / "report"
    check_rendered(report, tmp_path, ["ablation_bars", "accuracy_vs_flops", "edf", "training_curves", "gradflow"])
    assert (report / "ablation.csv").read_text().startswith("setting,seeds,params,FLOPs (MACs)")
    assert "FLOPs (multiply-accumulates)" in (report / "index.html").read_text()


@pytest.mark.slow
def test_study_report(cli, study_db, tmp_path):
    result = cli("search.report", f"search.storage=sqlite:///{study_db}", "out=report", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = tmp_path / "report"
    check_rendered(
        report,
        tmp_path,
        ["accuracy_vs_flops", "history", "parallel_coordinates", "importances", "slices", "edf", "good_ranges"],
    )
    trials = (report / "trials.csv").read_text().splitlines()
    assert trials[0] == "trial,state,trained,val_acc,flops_macs,params,overrides"
    assert len(trials) - 1 == len(optuna.load_study(study_name="fam", storage=f"sqlite:///{study_db}").trials)


def _study_with(tmp_path, name, trials):
    storage = f"sqlite:///{tmp_path}/{name}.db"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.add_trials(trials)
    return storage


CASES = ["missing_sweep", "empty_sweep", "empty_study", "only_infeasible", "unknown_study", "missing_db", "bad_out"]


@pytest.mark.parametrize("case", CASES)
def test_report_errors_are_one_line_and_write_nothing(cli, tmp_path, case, request):
    out = "report"
    if case == "missing_sweep":
        args = [str(tmp_path / "multirun" / "nope")]
        message = f"error: {tmp_path}/multirun/nope: no such sweep folder"
    elif case == "empty_sweep":
        (tmp_path / "sweep").mkdir()
        args, message = [str(tmp_path / "sweep")], "error: " + str(tmp_path / "sweep") + ": no finished runs in it"
    elif case == "empty_study":
        args = [f"search.storage={_study_with(tmp_path, 'empty', [])}"]
        message = "error: search.study_name=empty: the study has no trials yet"
    elif case == "only_infeasible":
        over = optuna.trial.create_trial(
            value=0.0, user_attrs={"trained": False, "over_budget": True, "flops": 9_000_000}
        )
        storage = _study_with(tmp_path, "over", [over, over])
        optuna.load_study(study_name="over", storage=storage).set_user_attr("budget_flops", 1_000_000)
        args = [f"search.storage={storage}"]
        message = "error: search.study_name=over: no trained trial to plot (2 of 2 candidates were over the budget"
    elif case == "unknown_study":
        args = [f"search.storage={_study_with(tmp_path, 'real', [])}", "search.study_name=imaginary"]
        message = "error: search.study_name=imaginary: not in"
    elif case == "missing_db":  # a mistyped path: no empty database is created there
        args = ["search.storage=sqlite:///studdy.db"]
        message = f"error: search.storage=sqlite:///studdy.db: no such database file ({tmp_path}/studdy.db)"
    else:
        args, out = [str(request.getfixturevalue("sweep_dir"))], "/proc/report"
        message = "error: out=/proc/report: cannot write there"
    result = cli("search.report", *args, f"out={out}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report").exists() and not list(tmp_path.glob(".report*"))
    assert not (tmp_path / "studdy.db").exists()


@pytest.mark.slow
def test_dashboard_serves_the_study_and_stops_on_ctrl_c(study_db, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "search.dashboard", f"search.storage=sqlite:///{study_db}", f"port={port}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        summaries = None
        for _ in range(60):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    summaries = json.load(response)["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        assert [s["study_name"] for s in summaries] == ["fam"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summaries[0]['study_id']}") as response:
            served = json.load(response)
        study = optuna.load_study(study_name="fam", storage=f"sqlite:///{study_db}")
        assert len(served["trials"]) == len(study.trials)
        assert any(attr["key"] == "flops" for attr in served["trials"][0]["user_attrs"])
    finally:
        server.send_signal(signal.SIGINT)
        stdout, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    assert f"http://127.0.0.1:{port}/" in stdout and "stopped" in stdout
