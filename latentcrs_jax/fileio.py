"""Atomic file and directory writes shared by every stage.

A stage never leaves a half-written artefact behind: it writes into a temporary sibling and
renames it into place, which is atomic on POSIX filesystems. The temporaries are made by
`tempfile`, which creates them private (0600 files, 0700 directories); they get the modes of
any other new file (0666 and 0777 less the process's umask) before they are renamed, so that
outputs are as readable as the user's umask says.
"""

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it.
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(directory: bool = False) -> int:
    """The mode `open()` / `mkdir()` would give a new file or directory: 0o666 / 0o777 & ~umask."""
    return (0o777 if directory else 0o666) & ~umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a temporary path beside `path`; renames it onto `path` if the block succeeds."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON atomically, with sorted keys so equal objects give equal bytes."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes one array as `.npy` atomically (fsync'ed before the rename; no pickle)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a fresh temporary directory; on success it replaces `path` as a whole.

    An existing `path` is moved aside first and removed only after the new one is in place, so
    a crash at any moment leaves either the old or the new directory, never a mix.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(new_file_mode(directory=True))
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
