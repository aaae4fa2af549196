"""Resolution of `data.data_dir`, including the embedded default dataset."""

import pathlib

from latentcrs_jax.data.errors import DataError

BUNDLED_PREFIX = "bundled:"
BUNDLED_ROOT = pathlib.Path(__file__).resolve().parents[1] / "bundled"


def resolve_data_dir(data_config) -> pathlib.Path:
    """Returns the raw-data folder; "bundled:<name>" names a dataset shipped in the package."""
    data_dir = str(data_config.data_dir)
    if not data_dir:
        raise DataError(
            f"config.data.data_dir is empty: dataset {data_config.name!r} is not bundled; "
            "pass --config.data.data_dir=/path/to/your/download"
        )
    if data_dir.startswith(BUNDLED_PREFIX):
        path = BUNDLED_ROOT / data_dir[len(BUNDLED_PREFIX) :]
    else:
        path = pathlib.Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError("data directory not found", str(path))
    return path
