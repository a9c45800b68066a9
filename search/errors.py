"""The error a user's bad input raises: one line naming the field, the value and what is allowed."""

from blocks.spec import is_int


class ConfigError(ValueError):
    """Bad user input outside the model config (data, trainer, storage...); reaches the CLI as exit code 2."""


def check_count(key: str, value: object, minimum: int, why: str = "") -> int:
    """`value` if it is an integer >= `minimum` (booleans are not), else a ConfigError naming `key`;
    `why` ends the message."""
    if not is_int(value) or value < minimum:
        raise ConfigError(f"{key}={value!r}: expected an integer >= {minimum}{why}")
    return value
