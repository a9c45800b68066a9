"""`python -m search.run [GROUP=CHOICE] [FIELD=VALUE] ...`: train one model per swept setting, then tabulate.

Every job's config is composed and validated before the first one starts, so a bad value costs
one line on stderr and exit code 2, and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from search.cli import fail
from search.config import check_trainer_runs_here, prepare
from search.errors import ConfigError
from search.study import run_search
from search.train import train

CONFIG_MODULE, CONFIG_NAME = "conf", "config"
DDP_JOB_ENV = "BLOCKSEARCH_DDP_JOB"  # the job a DDP worker process belongs to (see `ddp_worker_argv`)
# Hydra launchers whose jobs run on this machine (Hydra's own, submitit's local one, joblib's); others
# (submitit_slurm, ...) run them on a cluster's nodes, whose devices the submitting machine may not have.
LOCAL_LAUNCHERS = ("BasicLauncher", "LocalLauncher", "JoblibLauncher")


@hydra.main(config_path="pkg://conf", config_name=CONFIG_NAME, version_base="1.3")
def job(cfg: DictConfig) -> float:
    """One Hydra job: remember it for DDP workers, then train, unless an earlier run of the sweep finished it.

    A job an earlier run left unfinished resumes from its last checkpoint.
    """
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    job_dir, overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    os.environ[DDP_JOB_ENV] = json.dumps({"overrides": overrides, "dir": str(job_dir)})
    earlier_work = holds_work(job_dir)
    try:
        results = finished_results(job_dir, overrides)
        if results is not None:
            print(f"{job_dir}: finished by an earlier run; its results.json stays (delete it to train again)")
        else:
            last = job_dir / "checkpoints" / "last.ckpt"
            if cfg.ckpt_path is None and last.is_file():
                print(f"{job_dir}: resuming from {last}")
                cfg.ckpt_path = str(last)
            results = train(cfg)
        return results["metrics"].get("val/acc", 0.0)
    except ConfigError as error:  # bad input that shows only once the data is read
        if not earlier_work:
            remove_job_dir(job_dir)
        fail(error)


def holds_work(job_dir: Path) -> bool:
    """Whether a job folder holds more than what Hydra wrote when it launched the job (its config and log)."""
    return any(path.name != ".hydra" and path.suffix != ".log" for path in job_dir.iterdir())


def remove_job_dir(job_dir: Path) -> None:
    """Remove a job folder this run made, and the folders above it (up to the working directory) that then
    hold nothing but Hydra's `multirun.yaml`. Every process of a DDP job may get here: each step tolerates
    another having done it."""
    shutil.rmtree(job_dir, ignore_errors=True)
    cwd = Path.cwd()
    for folder in job_dir.parents:
        if folder == cwd or not folder.is_relative_to(cwd):
            return
        with contextlib.suppress(OSError):
            if {path.name for path in folder.iterdir()} - {"multirun.yaml"}:
                return
            (folder / "multirun.yaml").unlink(missing_ok=True)
            folder.rmdir()


def finished_results(job_dir: Path, overrides: list[str]) -> dict | None:
    """The results.json a job of `overrides` left in `job_dir`, or None; a ConfigError if another setting's
    results are there (results are never overwritten)."""
    path = job_dir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    if results.get("overrides") != overrides:
        raise ConfigError(
            f"hydra.sweep.dir={job_dir.parent}: job {job_dir.name} there holds the results of "
            f"'{' '.join(results.get('overrides', []))}'; rerun that sweep to resume it, or choose a new sweep dir"
        )
    return results


def split_config_dir(argv: list[str]) -> list[str]:
    """Hydra's `--config-dir DIR` (or `-cd DIR`) as the equivalent `hydra.searchpath` override."""
    out, args = [], iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in ("--config-dir", "-cd"):
            folder = Path(value if eq else next(args, "")).expanduser().resolve()
            if not folder.is_dir():
                raise ConfigError(f"--config-dir={folder}: no such folder")
            out.append(f"hydra.searchpath=[file://{folder}]")
        else:
            out.append(arg)
    return out


def job_overrides(argv: list[str]) -> list[list[str]]:
    """The override list of every job the command line sweeps over (Hydra's basic sweeper rules)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    own = [a for a in argv if a.startswith("hydra.searchpath=") or not a.startswith(("hydra", "+hydra", "-"))]
    parsed = OverridesParser.create().parse_overrides(own)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def preflight(argv: list[str]) -> list[DictConfig]:
    """Compose and validate every job of the sweep; returns their configs."""
    jobs = job_overrides(argv)
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        configs = [_compose(overrides) for overrides in jobs]
        settings = hydra_settings(argv)
    launcher = launcher_name(settings)
    if launcher == "SlurmLauncher":
        _check_slurm_here()
    for cfg in configs:
        prepare(cfg)
        if launcher in LOCAL_LAUNCHERS:
            check_trainer_runs_here(cfg)
    if configs[0].search.kind != "none":
        if len(configs) > 1:
            raise ConfigError(
                f"search={configs[0].search.name}: a search samples its own candidates; "
                "drop the comma lists (sweeps) from the command"
            )
    else:
        for job_dir, overrides in zip(_job_dirs(settings, len(jobs)), jobs, strict=False):
            finished_results(job_dir, overrides)
    return configs


def _job_dirs(settings: DictConfig, count: int) -> list[Path]:
    """Where the sweep's jobs will write, where Hydra's defaults tell it (DIR/N); else none."""
    if OmegaConf.to_container(settings.sweep)["subdir"] != "${hydra.job.num}":
        return []
    try:
        sweep = Path(settings.sweep.dir)
    except OmegaConfBaseException:  # interpolations only a running job can resolve
        return []
    return [sweep / str(number) for number in range(count)]


def hydra_settings(argv: list[str]) -> DictConfig:
    """The command's `hydra` config node: launcher, sweep dir, ... (inside `initialize_config_module`)."""
    hydra_args = [a for a in argv if a.lstrip("+~").startswith(("hydra/", "hydra."))]
    return compose(CONFIG_NAME, overrides=hydra_args, return_hydra_config=True).hydra


def launcher_name(settings: DictConfig) -> str:
    """The class name of the Hydra launcher of `settings` (a `hydra` node), e.g. BasicLauncher."""
    return settings.launcher._target_.rpartition(".")[2]


def _check_slurm_here() -> None:
    import submitit

    if submitit.SlurmExecutor.affinity() <= 0:  # what submitit checks once the sweep has started
        raise ConfigError("hydra/launcher=submitit_slurm: no SLURM here (srun not found); submit from a cluster node")


def _compose(overrides: list[str]) -> DictConfig:
    try:
        return compose(CONFIG_NAME, overrides=overrides)
    except ConfigCompositionException as error:
        unknown = re.match(r"Could not override '([\w.]+)'", str(error))
        if not unknown:
            raise
        key = unknown.group(1)
        base = compose(CONFIG_NAME, overrides=[o for o in overrides if not o.startswith(key)])
        parts = key.split(".")
        depth = max(d for d in range(len(parts)) if OmegaConf.is_dict(OmegaConf.select(base, ".".join(parts[:d]))))
        parent, known = ".".join(parts[:depth]), [str(k) for k in OmegaConf.select(base, ".".join(parts[:depth]))]
        message = f"{key}: unknown field {parts[depth]!r}; allowed: {', '.join(known)}"
        dotted = [k for k in known if "." in k]
        if dotted:  # keys that are config paths (the search space's) cannot be reached by a dotted override
            message += f"; set them as {parent}={{{dotted[0]}:{{...}}}}"
        raise ConfigError(message) from None


def one_line(error: Exception) -> str:
    """A user-facing single line for a Hydra/OmegaConf/config error."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, choice = error.missing_cfg_file.rpartition("/")
        allowed = ", ".join(error.options or [])
        return f"{group}={choice}: unknown option; allowed: {allowed}" if group else str(error).splitlines()[0]
    if isinstance(error, OmegaConfBaseException) and getattr(error, "full_key", None):
        return f"{error.full_key}: {str(error).splitlines()[0]}"
    return " ".join(str(error).split("\n")[0].split())


def ddp_worker_argv(argv: list[str]) -> list[str]:
    """A DDP worker Lightning launched re-runs our command line: turn it into its own job, not the sweep."""
    job_info = json.loads(os.environ[DDP_JOB_ENV])
    extras = [a for a in split_config_dir(argv) if a.startswith(("hydra.job.name=", "hydra.searchpath="))]
    return [
        *job_info["overrides"],
        "hydra.mode=RUN",
        f"hydra.run.dir={job_info['dir']}",
        "hydra.output_subdir=null",
        *extras,
    ]


def main() -> None:
    """Entry point of `python -m search.run`."""
    argv = sys.argv[1:]
    if os.environ.get(DDP_JOB_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        sys.argv[1:] = ddp_worker_argv(argv)
    else:
        try:
            overrides = split_config_dir(argv)
            first = preflight(overrides)[0]
            if first.search.kind != "none":
                run_search(first, overrides)
                return
        except (ValueError, HydraException, OmegaConfBaseException) as error:
            fail(one_line(error))
    job()


if __name__ == "__main__":
    main()
