"""Multi-process (multi-host) start-up through `jax.distributed.initialize`.

`cluster_env.plan` reads the environment: explicit `JAX_COORDINATOR_ADDRESS=host:port
JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i` for every process (several GPU hosts, or several
processes on one machine); on a SLURM or Open MPI job of several tasks, or a GKE TPU slice,
`initialize()` without arguments (JAX reads the cluster's variables); with
`LATENTCRS_DISTRIBUTED=auto`, always without arguments (a Cloud TPU VM pod slice, a Kubernetes
indexed Job). Every process then runs the same command; each feeds only its own rows of every
global batch (`sharding.place_batch`), and the compiler inserts the all-reduce.
"""

import os

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from latentcrs_jax.training import cluster_env


def maybe_initialize(environ=None) -> bool:
    """Initialises the distributed runtime when the environment asks for it; True if it did.

    Raises:
      ValueError: a bad LATENTCRS_DISTRIBUTED or explicit set, or `auto` where JAX finds no
        cluster.
    """
    plan = cluster_env.plan(os.environ if environ is None else environ)
    if plan is None:
        return False
    try:
        jax.distributed.initialize(**plan.kwargs)
    except ValueError as e:
        if plan.kwargs:
            raise
        raise ValueError(
            f"{plan.source}: jax.distributed.initialize found no cluster ({e}); set "
            "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID instead"
        ) from e
    # Meet at a first collective now, while every process has just left initialize's barrier:
    # it creates the communicator over all devices that every later step reuses. On CPU, gloo
    # gives the processes 30 s to meet at their first collective, which processes compiling
    # the first train step at different speeds on a loaded machine can miss (seen in a test).
    multihost_utils.sync_global_devices("latentcrs_jax: collectives ready")
    logging.info(
        "distributed (%s): process %d of %d, %d global devices",
        plan.source,
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


def same_as_process_0(flag: bool) -> bool:
    """Process 0's `flag` on every process (itself with one process): a decision that a
    collective follows, such as a time-based checkpoint save, must not differ between them."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))
