"""The reader registry and the `RawData` record every reader returns."""

import csv
import dataclasses
import gzip
import json
import math
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

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


# Largest field the csv module accepts (its default limit); a longer one is almost always an
# unterminated quote that swallowed the rest of the file.
MAX_FIELD_CHARS = csv.field_size_limit()


def text_lines(path: pathlib.Path) -> Iterator[str]:
    """The UTF-8 lines of `path` (`.gz` too), line ends kept, a leading byte-order mark dropped.

    Raises:
      DataError: a line that is not valid UTF-8, naming the file, the line and the byte.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                    "line); save the file as UTF-8",
                    str(path),
                    line_no,
                ) from None
            yield line.removeprefix("\ufeff") if line_no == 1 else line


class DuplicateKeyError(ValueError):
    """A JSON object names one key twice (`json.loads` alone would keep the last value)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"duplicate key {key!r}")
            seen.add(key)
    return record


def json_loads(line: str) -> Any:
    """`json.loads` that refuses an object with a repeated key (DuplicateKeyError, a ValueError):
    RFC 8259 leaves its meaning open, and silently keeping the last value hides broken exports."""
    return json.loads(line, object_pairs_hook=_unique_keys)


def csv_rows(path: pathlib.Path, required: tuple[str, ...]):
    """Yields (line_no, row dict) from a headed CSV, checking the header and field counts.

    `line_no` is the line where the row starts (a quoted field may span lines). The CSV is
    read strictly: a quote left open (which would swallow the rest of the file), text after
    a closing quote and a field over `MAX_FIELD_CHARS` are errors at the row's first line.
    """
    reader = csv.reader(text_lines(path), strict=True)
    start = 1
    try:
        header = next(reader, None)
        if header is None:
            raise DataError("empty file (no header row)", str(path), 1)
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"header lacks column(s) {missing}; has {header}", str(path), 1)
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                return
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"expected {len(header)} fields, got {len(row)}: {row!r}"[:300],
                    str(path),
                    start,
                )
            yield start, dict(zip(header, row))
    except csv.Error as e:
        end = reader.line_num
        if "field larger than field limit" in str(e):
            what = f"a field longer than {MAX_FIELD_CHARS} characters (an unterminated quote?)"
        elif "unexpected end of data" in str(e):
            what = "a quoted field that is never closed (unterminated quote)"
        elif "new-line character seen in unquoted field" in str(e):
            what = "a carriage return (\\r) inside a line (save with \\n or \\r\\n line ends)"
        else:
            what = f"malformed CSV ({e}; check its quotes)"
        span = f" (the row runs to line {end})" if end > start else ""
        raise DataError(f"{what} in the row starting here{span}", str(path), start) from None


def parse_number(
    text: str,
    kind: type,
    what: str,
    path: pathlib.Path,
    line: int,
    minimum: float | None = None,
):
    """Parses an int or float field, raising DataError naming the file and line.

    Floats must be finite (no nan or inf), ints must fit int64, and both at least `minimum`
    when one is given.
    """
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        raise DataError(f"{what} is not a number: {text!r}", str(path), line) from None
    if kind is float and not math.isfinite(value):
        raise DataError(f"{what} is not a finite number: {text!r}", str(path), line)
    if kind is int and not -(2**63) <= value < 2**63:
        raise DataError(f"{what} is out of range: {text!r}", str(path), line)
    if minimum is not None and value < minimum:
        raise DataError(f"{what} must be >= {minimum:g}, got {text!r}", str(path), line)
    return value


def parse_id(text: str, what: str, path: pathlib.Path, line: int) -> str:
    """A raw id field: non-empty after stripping spaces (the raw text is kept)."""
    if not text.strip():
        raise DataError(f"{what} is empty", str(path), line)
    return text


class ItemTable(dict):
    """Item records keyed by raw id; a repeated id keeps its first record and is counted.

    Call `warn()` after the file: it logs how many rows repeated an id (none are silent).
    """

    def __init__(self, path: pathlib.Path):
        super().__init__()
        self.path = path
        self.duplicates = 0
        self.first_duplicate: tuple[str, int] | None = None

    def add(self, raw_id: str, record: dict[str, Any], line: int) -> None:
        if raw_id in self:
            self.duplicates += 1
            self.first_duplicate = self.first_duplicate or (raw_id, line)
            return
        self[raw_id] = record

    def warn(self) -> None:
        if self.duplicates:
            raw_id, line = self.first_duplicate
            logging.warning(
                "%s: %d row(s) repeat an item id already read; the first row of each id is kept "
                "(first repeat: id %r on line %d)",
                self.path,
                self.duplicates,
                raw_id,
                line,
            )


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
