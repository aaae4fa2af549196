"""Multi-process (multi-host) start-up through `jax.distributed.initialize`.

On a TPU pod or a SLURM/Open MPI cluster JAX finds its peers itself; elsewhere (several GPU
hosts, or several processes on one machine) set
  JAX_COORDINATOR_ADDRESS=host:port  JAX_NUM_PROCESSES=N  JAX_PROCESS_ID=i
for every process. Every process then runs the same command; each feeds only its own rows of
every global batch (`sharding.place_batch`), and the compiler inserts the all-reduce.
"""

import os

import jax
from absl import logging
from jax.experimental import multihost_utils

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize() -> bool:
    """Initialises the distributed runtime when the environment asks for it; True if it did."""
    if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return False
    missing = [k for k in _ENV if not os.environ.get(k)]
    if missing:
        raise ValueError(f"multi-process run: set {missing} as well as JAX_COORDINATOR_ADDRESS")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
    )
    # Meet at a first collective now, while every process has just left initialize's barrier:
    # it creates the communicator over all devices that every later step reuses. On CPU, gloo
    # gives the processes 30 s to meet at their first collective, which processes compiling
    # the first train step at different speeds on a loaded machine can miss (seen in a test).
    multihost_utils.sync_global_devices("latentcrs_jax: collectives ready")
    logging.info(
        "distributed: process %d of %d, %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )
    return True


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (a no-op with one process): after
    process 0 alone changes shared files, the others must not read them before it is done."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"latentcrs_jax: {name}")
