"""EM on 1 device vs 4 forced CPU devices vs 2 processes through jax.distributed: same numbers
(the 2 processes also restart a stale stage of another config first)."""

import json
import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, worker_env

WORKER = REPO_ROOT / "tests" / "distributed_em_worker.py"
# One worker runs both tests, so the one-device reference run (`single`) is made once.
pytestmark = pytest.mark.xdist_group("em_parallel")


def _read(out):
    return (
        json.loads((out / "final_metrics.json").read_text()),
        json.loads((out / "losses.json").read_text()),
        json.loads((out / "devices.json").read_text()),
    )


def _close(a, b, tol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        if k in ("best_epoch", "epochs_run"):
            assert a[k] == b[k], k
        else:
            assert a[k] == pytest.approx(b[k], abs=tol), k


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    subprocess.run(
        [sys.executable, str(WORKER), str(out)], env=worker_env(), check=True, timeout=600
    )
    return _read(out)


@pytest.mark.slow
def test_four_devices_match_one(single, tmp_path):
    env = worker_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    subprocess.run([sys.executable, str(WORKER), str(tmp_path)], env=env, check=True, timeout=600)
    final, losses, devices = _read(tmp_path)
    assert devices == {"processes": 1, "devices": 4}
    _close(final, single[0])
    assert losses == pytest.approx(single[1], abs=1e-5)


@pytest.mark.slow
def test_two_processes_match_one(single, tmp_path):
    # A stale unfinished stage of another config: process 0 alone must clear it while the
    # other process waits (both deleting it, or one reading it mid-delete, used to crash).
    stale = tmp_path / "em" / "checkpoints"
    stale.mkdir(parents=True)
    (stale / "leftover").write_text("from another config")
    (tmp_path / "em" / "started.json").write_text('"another fingerprint"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path)],
            env=worker_env(
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES="2",
                JAX_PROCESS_ID=str(i),
            ),
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=600) == 0
    final, losses, devices = _read(tmp_path)
    assert devices == {"processes": 2, "devices": 2}
    _close(final, single[0])
    assert losses == pytest.approx(single[1], abs=1e-5)
