"""One run per workdir: the advisory lock, held across processes, released by SIGKILL."""

import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from configs import tiny
from latentcrs_jax import workdir_config, workdir_lock

HOLD = (
    "import sys, time; from latentcrs_jax import workdir_lock; "
    "lock = workdir_lock.acquire(sys.argv[1], command='holder-command'); "
    "print('held', flush=True); time.sleep(600)"
)


@pytest.fixture
def holder(tmp_path):
    """A second process that holds the lock of `tmp_path / 'w'` until killed."""
    workdir = tmp_path / "w"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(workdir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    yield workdir, proc
    proc.kill()
    proc.wait()


def test_a_second_holder_is_refused_in_the_same_process(tmp_path):
    with workdir_lock.acquire(tmp_path, command="first"):
        with pytest.raises(workdir_lock.WorkdirBusyError) as e:
            workdir_lock.acquire(tmp_path)
        message = str(e.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
        assert "running `first` since 20" in message and message.startswith(str(tmp_path))
    workdir_lock.acquire(tmp_path).release()  # Released: free again.


def test_another_process_holds_it_until_killed(holder):
    workdir, proc = holder
    with pytest.raises(workdir_lock.WorkdirBusyError, match=rf"pid {proc.pid} .*holder-command"):
        workdir_lock.acquire(workdir)
    proc.send_signal(signal.SIGKILL)  # No clean-up runs: the kernel releases the lock.
    proc.wait()
    lock = workdir_lock.acquire(workdir)
    assert workdir_lock.read_holder(workdir / ".lock")["pid"] == os.getpid()
    lock.release()


def _launch(module, *args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_a_second_run_stops_at_once_naming_the_holder(holder):
    workdir, proc = holder
    before = sorted(p.name for p in workdir.iterdir())
    run = _launch("launch.run", "--config=configs/tiny.py", f"--workdir={workdir}")
    assert run.returncode == 1, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {workdir}: in use by pid {proc.pid} on host ")
    assert "holder-command" in last and "Traceback" not in run.stderr
    assert sorted(p.name for p in workdir.iterdir()) == before  # Nothing written.
    # The lock is taken before JAX starts: no JAX line in the log.
    assert "JAX process" not in run.stderr


def test_read_only_commands_take_no_lock(holder):
    workdir, _ = holder
    workdir_config.record(tiny.get_config(), workdir)
    report = _launch("launch.report", f"--workdir={workdir}")
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip().endswith("report.md")
