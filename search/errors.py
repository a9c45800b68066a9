"""The error a user's bad input raises: one line naming the field, the value and what is allowed."""


class ConfigError(ValueError):
    """Bad user input outside the model config (data, trainer, storage...); reaches the CLI as exit code 2."""
