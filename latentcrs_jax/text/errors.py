"""Errors of the text stage; binaries print them as one line (see launch/common.py)."""

from latentcrs_jax.errors import UserInputError


class TextInputError(UserInputError, ValueError):
    """A malformed model directory, embedding file, text file or argument; names the file."""


class TextFileNotFoundError(UserInputError, FileNotFoundError):
    """A file or directory the text stage needs is missing; names it."""


class WeightsPackageMissingError(UserInputError, ModuleNotFoundError):
    """The default-weights package is not installed; says how to install it."""
