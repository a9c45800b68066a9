"""Shared test helpers: composing real configs, crashing a run on cue, and writing small data sets in their
real formats."""

from __future__ import annotations

import csv
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from search.config import compose_config

FAST = ["trainer.max_epochs=2", "logger=none", "trainer.progress_refresh=0"]


# `python -m search.run ARGS` through runpy, SIGKILLed from inside when the FIT-th fit of the process starts its
# epoch EPOCH: a kill timed from outside can miss the training it aims at.
CRASHING_RUN = """
import os, runpy, signal, sys
from search.module import Classifier

fit, epoch, fits = int(sys.argv.pop(1)), int(sys.argv.pop(1)), []

def count_fits(module, stage):
    if stage == "fit":
        fits.append(stage)

def crash_on_cue(module):
    if len(fits) == fit and module.current_epoch == epoch:
        os.kill(os.getpid(), signal.SIGKILL)

Classifier.setup = count_fits
Classifier.on_train_epoch_start = crash_on_cue
sys.argv[0] = "search.run"
runpy.run_module("search.run", run_name="__main__", alter_sys=True)
"""


def crashing_run(tmp_path: Path, *args: str, fit: int, epoch: int) -> list[str]:
    """The command line of `python -m search.run ARGS` that SIGKILLs itself as the `fit`-th training of the
    process (counting from 1) starts epoch `epoch` (counting from 0)."""
    script = tmp_path / "crashing_run.py"
    script.write_text(CRASHING_RUN)
    return [sys.executable, str(script), str(fit), str(epoch), *args]


def make_cfg(*overrides: str):
    """The real composed config of `python -m search.run`, shrunk for a test."""
    return compose_config(*FAST, *overrides)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file a run wrote (metrics.csv, gradflow.csv, ablation.csv...)."""
    with open(path) as f:
        return list(csv.DictReader(f))


def write_cifar10(root: Path, per_batch: int = 20) -> Path:
    """A small CIFAR-10 in torchvision's python format (5 train batches, a test batch, meta)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return root


def write_image_folder(root: Path, classes: int = 3, per_class: int = 6, size: int = 40) -> Path:
    """root/{train,val}/CLASS/*.png with random RGB images."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=30000",
]


def render_page(page: Path, workdir: Path) -> tuple[str, Path]:
    """Open `page` in headless Chromium as a person would: (the DOM after scripts ran, a screenshot)."""
    import subprocess

    base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'chromium'}"]
    dom = subprocess.run(
        [*base, "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=180, check=True
    ).stdout
    shot = workdir / "screenshot.png"
    subprocess.run(
        [*base, "--window-size=1280,2400", f"--screenshot={shot}", page.resolve().as_uri()],
        capture_output=True,
        timeout=180,
        check=True,
    )
    return dom, shot
