"""Errors raised by the data layer, always naming the file (and line) at fault."""

from latentcrs_jax.errors import UserInputError


class DataError(UserInputError, ValueError):
    """Bad or unusable input data: names the file and, where there is one, the line."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class DatasetMismatchError(UserInputError, ValueError):
    """A processed dataset on disk was made with a different config than the one given."""
