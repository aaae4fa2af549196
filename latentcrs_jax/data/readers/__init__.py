"""Readers: raw files of each supported format -> `RawData` (interactions + item records).

Every reader streams its input, applies the rating threshold while reading (Amazon files are
GBs), and raises `DataError` naming the file and line of any malformed row.
"""

from latentcrs_jax.data.readers.base import RawData, read

__all__ = ["RawData", "read"]
