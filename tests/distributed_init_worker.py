"""One process of the cluster start-up test (run by tests/test_distributed_startup.py).

Usage: python tests/distributed_init_worker.py OUT_DIR  (with a cluster's variables set).
Starts through `distributed.maybe_initialize`, gathers every process's index over the
collective and writes OUT_DIR/<process index>.json.
"""

import json
import pathlib
import sys

sys.path[:0] = [str(pathlib.Path(__file__).parents[1])]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from latentcrs_jax.training import distributed  # noqa: E402


def main(out_dir: str) -> None:
    started = distributed.maybe_initialize()
    gathered = multihost_utils.process_allgather(jnp.array([jax.process_index()]))
    record = {
        "started": started,
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "gathered": gathered.reshape(-1).tolist(),
    }
    (pathlib.Path(out_dir) / f"{jax.process_index()}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1])
