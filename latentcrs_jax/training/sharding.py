"""Data parallelism with `jax.jit` + `NamedSharding` over a 1-D `data` mesh (never pmap).

The mesh spans every device. Batches are split along their leading axis over `data`; the train
state is replicated. The compiler inserts the gradient all-reduce, so step functions contain no
collectives and give the same numbers (up to float summation order) on 1 or N devices.
"""

from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh() -> Mesh:
    """A 1-D mesh named `data` over all (global) devices.

    The axis is `Auto` (the compiler propagates shardings), not `Explicit` (the default of
    `jax.make_mesh` in recent JAX), so model code needs no sharding annotations.
    """
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over `data`."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    """Fully replicated."""
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """Raises ValueError unless the global batch divides evenly over the `data` axis."""
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {n} devices of the data mesh; "
            "choose a multiple"
        )


def process_rows(global_rows: int, index: int | None = None, count: int | None = None) -> slice:
    """The rows of a global batch that process `index` of `count` feeds (contiguous, equal
    shares; default: this process of `jax.process_count()`)."""
    n = jax.process_count() if count is None else count
    i = jax.process_index() if index is None else index
    if global_rows % n:
        raise ValueError(f"batch of {global_rows} rows does not split over {n} processes")
    share = global_rows // n
    return slice(i * share, (i + 1) * share)


def place_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns a global host batch into global arrays sharded over `data`.

    Every process builds the same global batch (data order is a pure function of seed and
    epoch); each one hands only its own rows to `jax.make_array_from_process_local_data`, so
    on several hosts no process ever holds device data it does not own.

    Args:
      batch: name -> array[B_global, ...].
      mesh: the data mesh.

    Returns:
      name -> jax.Array[B_global, ...] with `P("data")` sharding.
    """
    sharding = data_sharding(mesh)
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        check_batch_size(value.shape[0], mesh)
        local = value[process_rows(value.shape[0])]
        out[name] = jax.make_array_from_process_local_data(sharding, local, value.shape)
    return out


def replicate(tree, mesh: Mesh):
    """Places a pytree replicated on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))
