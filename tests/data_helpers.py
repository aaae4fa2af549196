"""Helpers for data-layer tests: configs for hand-made raw files."""

import pathlib

from configs import base


def data_config(data_dir: pathlib.Path | str, reader: str = "movielens_dat", **overrides):
    """A data config section for raw files written by a test."""
    cfg = base.get_data_config()
    cfg.name = "test"
    cfg.reader = reader
    cfg.data_dir = str(data_dir)
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def write_ml_dat(root: pathlib.Path, ratings: list[str], movies: list[str]) -> pathlib.Path:
    """Writes ratings.dat and movies.dat (latin-1) with the given lines."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("\n".join(ratings) + "\n", encoding="latin-1")
    (root / "movies.dat").write_text("\n".join(movies) + "\n", encoding="latin-1")
    return root
