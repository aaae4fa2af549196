"""One run per workdir: an OS advisory lock on `<workdir>/.lock`, taken by every writer.

`fcntl.flock` on an open file: the kernel releases it when the process exits in any way,
SIGKILL included, so a crashed run never leaves a stale lock behind. The holder writes its
pid, host, command and start time into the file, and a second run names them in its error.
Commands that only read a workdir (chat, report) take no lock.
"""

import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket
import sys

from absl import logging

from latentcrs_jax import workdir_config
from latentcrs_jax.errors import UserInputError

LOCK_FILE = ".lock"


class WorkdirBusyError(UserInputError):
    """Another process holds the workdir's lock."""


class WorkdirLock:
    """A held lock; `release()` (or the process's exit) lets the next run in."""

    def __init__(self, path: pathlib.Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # The holder's details no longer apply.
        finally:
            os.close(self._fd)  # Closing the only descriptor releases the flock.
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder_text(holder: dict | None) -> str:
    """'pid 123 on host h, running `cmd` since 2026-...' (or a placeholder)."""
    if not holder:
        return "another process (it has not recorded its details yet)"
    return (
        f"pid {holder.get('pid')} on host {holder.get('host')}, running "
        f"`{holder.get('command')}` since {holder.get('started')}"
    )


def read_holder(path: str | os.PathLike) -> dict | None:
    """The details the current (or last) holder recorded, or None."""
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
        holder = json.loads(text)
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def acquire(
    workdir: str | os.PathLike, command: str | None = None, create: bool = True
) -> WorkdirLock:
    """Takes the workdir's lock without waiting.

    Args:
      workdir: the experiment directory.
      command: what to record as the holder's command (default: this process's argv).
      create: create a missing workdir (else a missing one is an error).

    Raises:
      WorkdirBusyError: another process holds it; the message names that process.
      WorkdirNotFoundError: the workdir does not exist and `create` is False.
    """
    if create:
        pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    workdir = workdir_config.require_workdir(workdir)
    path = workdir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            logging.warning("%s: cannot lock (%s); running without a lock", path, e)
            return WorkdirLock(path, os.open(os.devnull, os.O_RDONLY))
        raise WorkdirBusyError(
            f"{workdir}: in use by {holder_text(read_holder(path))}; wait for it to finish, "
            "or use another --workdir"
        ) from None
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command if command is not None else " ".join(sys.argv),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
    return WorkdirLock(path, fd)
