import os
import subprocess
import sys

import pytest

os.environ.setdefault("WANDB_MODE", "offline")


def run_module(module: str, *args: str, cwd: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a user would, capturing output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


@pytest.fixture
def cli():
    return run_module
