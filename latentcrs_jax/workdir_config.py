"""The config a workdir was made with, recorded in `<workdir>/config.json`.

Every run that writes a workdir records its config there; commands that only read a
trained workdir (chat, evaluate, report) take it from there when `--config` is not given.
JSON keeps the file readable; tuples are tagged so the loaded config equals the recorded one.
"""

import json
import pathlib
from typing import Any

import ml_collections

from latentcrs_jax import fileio
from latentcrs_jax.errors import ConfigError, UserInputError

CONFIG_FILE = "config.json"
_TUPLE = "__tuple__"


class WorkdirNotFoundError(UserInputError):
    """A command that reads a workdir was given one that does not exist."""


def _encode(value: Any) -> Any:
    if isinstance(value, ml_collections.ConfigDict | dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_decode(v) for v in value[_TUPLE])
        return ml_collections.ConfigDict({k: _decode(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def record(config, workdir: str | pathlib.Path) -> pathlib.Path:
    """Writes `config` to `<workdir>/config.json` (atomically, and only when it changed, so
    that a run that redoes nothing writes nothing); returns the path."""
    path = pathlib.Path(workdir) / CONFIG_FILE
    encoded = _encode(config)
    try:
        if json.loads(path.read_text(encoding="utf-8")) == encoded:
            return path
    except (OSError, ValueError):
        pass
    fileio.write_json(path, encoded)
    return path


def require_workdir(workdir: str | pathlib.Path) -> pathlib.Path:
    """`workdir` as a Path; raises WorkdirNotFoundError when it is not a directory."""
    path = pathlib.Path(workdir)
    if not path.is_dir():
        raise WorkdirNotFoundError(
            f"{path}: no such workdir (make one with python -m launch.run --workdir={path})"
        )
    return path


def load(workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config recorded in `workdir`.

    Raises:
      WorkdirNotFoundError: the workdir does not exist.
      ConfigError: it has no readable config.json (pass --config instead).
    """
    path = require_workdir(workdir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no recorded config here; pass --config=configs/<name>.py")
    try:
        return _decode(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); pass --config=configs/<name>.py") from e


def config_for_reading(config, workdir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """The config a read-only command uses: `config` when given, else the recorded one."""
    require_workdir(workdir)
    return config if config is not None else load(workdir)
