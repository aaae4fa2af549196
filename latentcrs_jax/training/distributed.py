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
    logging.info(
        "distributed: process %d of %d, %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )
    return True
