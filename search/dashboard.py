"""`python -m search.dashboard search.storage=URL [host=127.0.0.1] [port=8080]`: optuna-dashboard.

Serves the study storage (trials' user attributes show FLOPs, params and config) on loopback by
default; Ctrl-C stops it.
"""

from __future__ import annotations

import sys

from search.cli import fail, parse_options
from search.errors import ConfigError

OPTIONS = {"search.storage": None, "host": "127.0.0.1", "port": "8080"}


def parse_args(argv: list[str]) -> dict[str, str]:
    """`key=value` options; a ConfigError names a bad one."""
    options = parse_options(argv, OPTIONS)
    if not options["search.storage"]:
        raise ConfigError("search.storage is missing: give the study storage URL (sqlite:///runs/NAME/study.db)")
    if not options["port"].isdigit() or not 0 < int(options["port"]) < 65536:
        raise ConfigError(f"port={options['port']}: expected an integer in 1..65535")
    return options


def main() -> None:
    """Entry point: print the URL, serve until Ctrl-C."""
    from optuna_dashboard import run_server

    from search.storage import open_storage

    try:
        options = parse_args(sys.argv[1:])
        storage = open_storage(options["search.storage"], heartbeat_s=60, existing=True)
    except ValueError as error:
        fail(error)
    host, port = options["host"], int(options["port"])
    print(f"optuna-dashboard for {options['search.storage']} at http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    try:
        run_server(storage, host=host, port=port)  # returns when Ctrl-C stops the server
    except KeyboardInterrupt:
        pass
    except OSError as error:  # the port is taken, or the host is not ours
        fail(ConfigError(f"host={host} port={port}: cannot serve there ({error.strerror or error})"))
    print("stopped")


if __name__ == "__main__":
    main()
