"""The reader registry and the `RawData` record every reader returns."""

import csv
import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np

from latentcrs_jax.data.errors import DataError


@dataclasses.dataclass
class RawData:
    """Interactions in file order plus item records keyed by raw item id.

    Attributes:
      users: raw user id of each kept interaction, length E.
      items: raw item id of each kept interaction, length E.
      ratings: float32[E].
      timestamps: int64[E]; file position where the format has no timestamps.
      lines: int64[E], 1-based line of each interaction in `interactions_path`.
      item_meta: raw item id -> item record (see `latentcrs_jax.data.items`).
      interactions_path: the file the interactions came from (for error messages).
      items_path: the file the item records came from.
      numeric_user_ids: True when every raw user id is an integer (ordering rule).
      strict_items: True when an interaction with an item missing from the item file is an
        error (MovieLens) rather than an item without metadata (Amazon, generic).
    """

    users: list[str]
    items: list[str]
    ratings: np.ndarray
    timestamps: np.ndarray
    lines: np.ndarray
    item_meta: dict[str, dict[str, Any]]
    interactions_path: str
    items_path: str
    numeric_user_ids: bool
    strict_items: bool = False

    def __len__(self) -> int:
        return len(self.users)


class InteractionBuffer:
    """Accumulates interactions row by row while a reader streams its file."""

    def __init__(self, path: pathlib.Path, min_rating: float):
        self.path = path
        self.min_rating = min_rating
        self.users: list[str] = []
        self.items: list[str] = []
        self.ratings: list[float] = []
        self.timestamps: list[int] = []
        self.lines: list[int] = []
        self.rows_read = 0

    def add(self, user: str, item: str, rating: float, timestamp: int, line: int) -> None:
        """Adds one row, dropping it when its rating is below the threshold."""
        self.rows_read += 1
        if rating < self.min_rating:
            return
        self.users.append(user)
        self.items.append(item)
        self.ratings.append(rating)
        self.timestamps.append(timestamp)
        self.lines.append(line)

    def finish(
        self, item_meta: dict[str, dict[str, Any]], items_path: str, strict_items: bool = False
    ) -> RawData:
        """Returns the collected rows; an empty file or an all-filtered one is an error."""
        if self.rows_read == 0:
            raise DataError("no interactions found (empty file?)", str(self.path))
        return RawData(
            users=self.users,
            items=self.items,
            ratings=np.asarray(self.ratings, np.float32),
            timestamps=np.asarray(self.timestamps, np.int64),
            lines=np.asarray(self.lines, np.int64),
            item_meta=item_meta,
            interactions_path=str(self.path),
            items_path=items_path,
            numeric_user_ids=all(u.lstrip("-").isdigit() for u in self.users),
            strict_items=strict_items,
        )


def csv_rows(path: pathlib.Path, required: tuple[str, ...]):
    """Yields (line_no, row dict) from a headed CSV, checking the header and field counts."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError("empty file (no header row)", str(path), 1)
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"header lacks column(s) {missing}; has {header}", str(path), 1)
        for row in reader:
            line_no = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"expected {len(header)} fields, got {len(row)}: {row!r}", str(path), line_no
                )
            yield line_no, dict(zip(header, row))


def parse_number(text: str, kind: type, what: str, path: pathlib.Path, line: int):
    """Parses an int or float field, raising DataError naming the file and line."""
    try:
        return kind(text)
    except ValueError:
        raise DataError(f"{what} is not a number: {text!r}", str(path), line) from None


def require_file(path: pathlib.Path, hint: str = "") -> pathlib.Path:
    """Returns `path`, or raises DataError if it is missing."""
    if not path.is_file():
        raise DataError("file not found" + (f" ({hint})" if hint else ""), str(path))
    return path


_READERS: dict[str, Callable[[Any], RawData]] = {}


def register(name: str):
    """Registers a reader function `fn(data_config) -> RawData` under `name`."""

    def decorator(fn):
        _READERS[name] = fn
        return fn

    return decorator


def read(data_config) -> RawData:
    """Reads the raw data a data config names (see configs/base.py, `data` section)."""
    # Import for the registration side effect.
    from latentcrs_jax.data.readers import amazon2023, generic, movielens  # noqa: F401

    if data_config.reader not in _READERS:
        raise DataError(
            f"unknown reader {data_config.reader!r}; expected one of {sorted(_READERS)}"
        )
    return _READERS[data_config.reader](data_config)
