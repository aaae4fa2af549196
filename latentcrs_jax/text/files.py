"""Small file helpers of the text stage: line-per-text files and atomic binary writes.

Atomic writes go to a temporary sibling that is fsync'ed and then renamed onto the target with
`os.replace` (atomic on POSIX), so an interrupted run leaves either the old file or the new one,
never a half-written one. Temporary names start with "." and end with ".tmp".
"""

import contextlib
import os
import pathlib
from collections.abc import Iterator
from typing import BinaryIO

from latentcrs_jax import fileio
from latentcrs_jax.text.errors import TextFileNotFoundError, TextInputError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens a temporary sibling of `path` for binary writing; renames it onto `path` on success.

    The data is fsync'ed before the rename (`fileio.atomic_path`). On an exception inside the
    block the temporary file is removed and `path` is untouched.
    """
    with fileio.atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def read_lines(path: str | os.PathLike) -> list[str]:
    """Reads a UTF-8 file with one text per line.

    Lines split on "\\n" only (a trailing "\\r" is dropped, so CRLF files work); other Unicode
    line separators stay inside their text. A leading byte-order mark is dropped. A final
    newline does not add an empty text, but empty lines in between are kept as empty texts.

    Raises:
        FileNotFoundError: naming the file.
        ValueError: naming the file when it is not valid UTF-8.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise TextFileNotFoundError(f"Text file not found: {path}")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8").removeprefix("\ufeff")  # A leading BOM is no text.
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TextInputError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x}); save the file as UTF-8"
        ) from e
    if content == "":
        return []
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
