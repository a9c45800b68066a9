"""The small command lines (`search.select`, `search.report`, `search.dashboard`): options and errors."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from search.errors import ConfigError


def parse_options(argv: list[str], defaults: Mapping[str, Any], *, bare: str | None = None) -> dict[str, Any]:
    """`key=value` arguments over `defaults`; a bare argument goes to key `bare` where one is allowed."""
    options = dict(defaults)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep and bare is not None:
            options[bare] = arg
        elif sep and key in defaults:
            options[key] = value
        else:
            allowed = ", ".join([f"{k}=" for k in defaults] + ([bare] if bare else []))
            raise ConfigError(f"{arg}: unknown option; allowed: {allowed}")
    return options


def fail(error: Exception | str) -> NoReturn:
    """Report bad input as one line on stderr and exit with code 2."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def run_main(run: Callable[[list[str]], str]) -> None:
    """Print `run(argv)`; a ValueError (bad input) becomes one error line and exit code 2."""
    try:
        print(run(sys.argv[1:]))
    except ValueError as error:
        fail(error)
