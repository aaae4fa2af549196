"""Ragged int rows (flat values + offsets) and their per-batch left padding.

Variable-length rows (user histories) are stored as the prepared dataset stores sequences
(`dataset.py`: seq_items / seq_offsets): one flat int32 array and int64 offsets, O(total
items) memory whatever the longest row. A batch is padded on the fly to a width from a small
fixed set (`padded_width`: `base * 2**k`, capped), so a jitted consumer compiles once per
width and not once per batch: at most log2(cap / base) + 2 widths.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Ragged:
    """R rows of int ids: row r is `values[offsets[r]:offsets[r + 1]]`.

    Attributes:
      values: int32[E] every row's ids, concatenated in row order.
      offsets: int64[R + 1] row starts (offsets[0] = 0, offsets[R] = E).
    """

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[np.ndarray], keep_last: int = 0) -> "Ragged":
        """Stores `rows` (int arrays of any lengths); `keep_last` > 0 keeps each row's last
        that many ids only."""
        rows = [np.asarray(r)[-keep_last:] if keep_last else np.asarray(r) for r in rows]
        lengths = np.array([len(r) for r in rows], np.int64)
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64[R] ids per row."""
        return np.diff(self.offsets)

    @property
    def max_length(self) -> int:
        """The longest row (0 when there are no rows)."""
        return int(self.lengths.max()) if len(self) else 0

    def row(self, r: int) -> np.ndarray:
        """int32[n_r] the ids of row r."""
        return self.values[self.offsets[r] : self.offsets[r + 1]]

    def left_padded(self, rows: np.ndarray, width: int) -> np.ndarray:
        """The last `width` ids of each selected row, left-padded with 0.

        Args:
          rows: int[B] row indices (repeats allowed).
          width: output columns.

        Returns:
          int32[B, width].
        """
        rows = np.asarray(rows, np.int64)
        out = np.zeros((len(rows), width), np.int32)
        keep = np.minimum(self.lengths[rows], width)  # [B]
        total = int(keep.sum())
        if total == 0:
            return out
        owner = np.repeat(np.arange(len(rows)), keep)  # [total] output row of each id
        first = np.cumsum(keep) - keep  # [B] where each row's kept ids start in `owner`
        pos = np.arange(total) - first[owner]  # 0..keep-1 within the row
        src = self.offsets[rows + 1][owner] - keep[owner] + pos
        out[owner, width - keep[owner] + pos] = self.values[src]
        return out


def padded_width(needed: int, base: int, cap: int) -> int:
    """The smallest width of {base, 2 base, 4 base, ...} >= `needed`, at most `cap`.

    Args:
      needed: columns the batch needs (its longest row), <= cap.
      base: the smallest width (>= 1).
      cap: the largest width (the longest row overall).

    Returns:
      `base` when needed <= base, else min(cap, the smallest base * 2**k >= needed): one of
      at most log2(cap / base) + 2 widths.
    """
    if base < 1:
        raise ValueError(f"base must be >= 1, got {base}")
    if needed > max(cap, base):
        raise ValueError(f"a row of {needed} ids does not fit the cap {cap}")
    width = base
    while width < needed:
        width *= 2
    return width if needed <= base else min(width, cap)
