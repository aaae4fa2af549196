"""Multi-process start-up: which environments start `jax.distributed`, and a two-process
localhost run found through SLURM's variables alone (no JAX_COORDINATOR_ADDRESS)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, worker_env

from latentcrs_jax.training import cluster_env

SLURM2 = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "localhost",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
}


def test_no_cluster_is_one_process():
    assert cluster_env.plan({}) is None
    assert cluster_env.plan({"SLURM_NTASKS": "4"}) is None  # not all of SLURM's variables
    assert cluster_env.plan({**SLURM2, "SLURM_NTASKS": "1"}) is None  # keeps every device
    assert cluster_env.plan({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "1"}) is None
    assert cluster_env.plan({"TPU_WORKER_HOSTNAMES": "t0"}) is None  # a single-host slice


@pytest.mark.parametrize(
    "environ, source",
    [
        (SLURM2, "SLURM job 4242, 2 tasks"),
        ({"OMPI_MCA_orte_hnp_uri": "1.2@tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "8"}, "MPI"),
        ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, "TPU slice of 4 hosts"),
        ({"TPU_PROCESS_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476"}, "TPU slice of 2 hosts"),
        ({"LATENTCRS_DISTRIBUTED": "auto"}, "auto"),
    ],
)
def test_clusters_initialize_without_arguments(environ, source):
    plan = cluster_env.plan(environ)
    assert plan.kwargs == {} and source in plan.source


def test_explicit_variables_win_and_off_wins_over_everything():
    explicit = {
        "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    plan = cluster_env.plan({**SLURM2, **explicit})
    assert plan.kwargs == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 2,
        "process_id": 1,
    }
    assert cluster_env.plan({**SLURM2, **explicit, "LATENTCRS_DISTRIBUTED": "off"}) is None


@pytest.mark.parametrize(
    "environ, match",
    [
        ({"LATENTCRS_DISTRIBUTED": "yes"}, "use one of detect, auto, off"),
        ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"}, "JAX_PROCESS_ID"),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"},
            "must be integers",
        ),
    ],
)
def test_bad_settings_are_errors(environ, match):
    with pytest.raises(ValueError, match=match):
        cluster_env.plan(environ)


def test_bad_setting_is_one_line_from_a_binary(tmp_path):
    env = {**os.environ, "LATENTCRS_DISTRIBUTED": "maybe"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.prepare",
            "--config=configs/tiny.py",
            f"--workdir={tmp_path}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: environment: LATENTCRS_DISTRIBUTED='maybe': use one of detect, auto, off"
    )


def test_two_processes_start_from_slurm_variables(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "tests" / "distributed_init_worker.py"),
                str(tmp_path),
            ],
            env=worker_env(
                **{**SLURM2, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)},
                JAX_COORDINATOR_PORT=str(port),
                JAX_PLATFORMS="cpu",
            ),
        )
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0
    for i in range(2):
        record = json.loads((tmp_path / f"{i}.json").read_text())
        assert record == {
            "started": True,
            "process": i,
            "processes": 2,
            "devices": 2,
            "gathered": [0, 1],
        }
