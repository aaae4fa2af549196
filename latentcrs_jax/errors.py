"""The base of every error caused by the user's input (files, configs, ids, text).

Binaries print such errors as one clear line instead of a traceback (see launch/common.py).
"""


class UserInputError(Exception):
    """Bad input from the user: its message alone says what is wrong and where."""


class ConfigError(UserInputError, ValueError):
    """A config field (or a `--config.x=...` override) is unknown or holds an unusable value."""
