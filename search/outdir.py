"""Output folders written all or nothing: built beside the target, then swapped in."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from search.errors import ConfigError


@contextmanager
def staged_output(out: Path, marker: str) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `out`. An existing `out` is replaced only if it
    holds `marker` (an earlier output of ours) or nothing, never a user's other files."""
    if out.exists() and any(out.iterdir()) and not (out / marker).exists():
        raise ConfigError(f"out={out}: exists and holds something else; choose a new or empty folder")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as error:
        raise ConfigError(f"out={out}: cannot write there ({error.strerror or error})") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
