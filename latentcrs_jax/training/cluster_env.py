"""Whether and how a run starts several processes, from environment variables alone.

Imported before JAX (launch/common.py decides on it which process takes the workdir lock).
`LATENTCRS_DISTRIBUTED` selects:
  detect (default)  `JAX_COORDINATOR_ADDRESS` set: `jax.distributed.initialize` with it and
                    `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`. Else a job of several processes on a
                    cluster whose variables JAX's own detectors read (jax/_src/clusters):
                    SLURM (`SLURM_JOB_ID`, `SLURM_STEP_NODELIST`, `SLURM_NTASKS` > 1,
                    `SLURM_PROCID`, `SLURM_LOCALID`), Open MPI (`OMPI_MCA_orte_hnp_uri`,
                    `OMPI_COMM_WORLD_SIZE` > 1) or a GKE TPU slice (`TPU_WORKER_HOSTNAMES` or
                    `TPU_PROCESS_ADDRESSES` naming several hosts): `initialize()` without
                    arguments. Otherwise one process. A single-task SLURM or MPI job stays one
                    process, so it keeps every local device (JAX's detectors would give each
                    process one GPU).
  auto              `initialize()` without arguments always: JAX finds the cluster itself, also
                    where no variable shows it (the VMs of a Cloud TPU pod slice, through the
                    metadata server; a Kubernetes indexed Job, with `jax[k8s]` installed).
  off               one process, whatever the environment says.
"""

import dataclasses
from collections.abc import Mapping

MODES = ("detect", "auto", "off")
EXPLICIT_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
_SLURM_VARS = (
    "SLURM_JOB_ID",
    "SLURM_STEP_NODELIST",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to call `jax.distributed.initialize`.

    Attributes:
      kwargs: its arguments ({} = JAX detects everything).
      source: what asked for it, for the log.
    """

    kwargs: dict
    source: str


def _count(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ.get(name, ""))
    except ValueError:
        return 0


def detected_cluster(environ: Mapping[str, str]) -> str | None:
    """The cluster of several processes that the variables show, or None."""
    if all(v in environ for v in _SLURM_VARS) and _count(environ, "SLURM_NTASKS") > 1:
        return f"SLURM job {environ['SLURM_JOB_ID']}, {environ['SLURM_NTASKS']} tasks"
    if "OMPI_MCA_orte_hnp_uri" in environ and _count(environ, "OMPI_COMM_WORLD_SIZE") > 1:
        return f"Open MPI, {environ['OMPI_COMM_WORLD_SIZE']} ranks"
    for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
        hosts = [h for h in environ.get(name, "").split(",") if h.strip()]
        if len(hosts) > 1:
            return f"TPU slice of {len(hosts)} hosts ({name})"
    return None


def plan(environ: Mapping[str, str]) -> Plan | None:
    """The start-up the environment asks for; None for one process.

    Raises:
      ValueError: an unknown LATENTCRS_DISTRIBUTED, or an incomplete explicit set.
    """
    mode = environ.get("LATENTCRS_DISTRIBUTED", "").strip().lower() or "detect"
    if mode not in MODES:
        raise ValueError(f"LATENTCRS_DISTRIBUTED={mode!r}: use one of {', '.join(MODES)}")
    if mode == "off":
        return None
    if mode == "auto":
        return Plan({}, "LATENTCRS_DISTRIBUTED=auto (JAX detects the cluster)")
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        missing = [k for k in EXPLICIT_VARS if not environ.get(k)]
        if missing:
            raise ValueError(f"multi-process run: set {missing} as well as JAX_COORDINATOR_ADDRESS")
        try:
            kwargs = {
                "coordinator_address": environ["JAX_COORDINATOR_ADDRESS"],
                "num_processes": int(environ["JAX_NUM_PROCESSES"]),
                "process_id": int(environ["JAX_PROCESS_ID"]),
            }
        except ValueError as e:
            raise ValueError(f"JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers ({e})") from e
        return Plan(kwargs, "JAX_COORDINATOR_ADDRESS")
    cluster = detected_cluster(environ)
    return Plan({}, cluster) if cluster else None
