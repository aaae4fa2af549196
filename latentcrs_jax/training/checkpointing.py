"""One place for orbax: the latest checkpoint (for resume) and the best one (for results).

Layout under a stage's directory:
  checkpoints/latest/<epoch>/   the state after the last finished epoch (max_to_keep=1)
  checkpoints/best/<epoch>/     the state of the best epoch so far (max_to_keep=1)
Each checkpoint holds `state` (the train state pytree: params, optimizer state, step, RNG and
task extras such as the current centroids) and `meta` (JSON: epoch, early-stopping state,
data-order seed, and whatever the trainer adds).

Restore precedence (the trainer applies it): this stage's own `checkpoints/latest` in the
workdir if there is one (automatic resume), otherwise a fresh state from the task (which may
itself initialise from an earlier stage's artefacts). Saves are asynchronous; call
`wait_until_finished()` before reading them or exiting.
"""

import pathlib

import jax
import orbax.checkpoint as ocp
from absl import logging


def _manager(directory: pathlib.Path) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
    )


class Checkpointer:
    """The latest and best checkpoints of one training stage."""

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        self._latest = _manager(self.directory / "latest")
        self._best = _manager(self.directory / "best")

    def _pick(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        return self._latest if which == "latest" else self._best

    def latest_step(self, which: str = "latest") -> int | None:
        """The newest saved step of `which` ("latest" or "best"), or None."""
        return self._pick(which).latest_step()

    def save(self, step: int, state, meta: dict, *, best: bool = False) -> None:
        """Saves `state` and `meta` as the latest checkpoint, and also as best if `best`.

        Args:
          step: monotonically increasing id (the trainer uses the epoch + 1).
          state: pytree of arrays.
          meta: JSON-serialisable dict.
          best: also replace the best checkpoint.
        """
        # Order matters for a kill at any moment: the best checkpoint is written (and
        # finished) before the latest one starts, so the latest never runs ahead of a best
        # that it claims (its early-stopping state). A kill between the two resumes from the
        # previous epoch, which deterministic training replays identically.
        self.wait_until_finished()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        if best:
            self._best.save(step, args=args)
            self._best.wait_until_finished()
        self._latest.save(step, args=args)
        logging.info("checkpoint %d saved%s", step, " (best)" if best else "")

    def restore(self, abstract_state, *, which: str = "latest", step: int | None = None):
        """Restores (state, meta).

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) like the state.
          which: "latest" or "best".
          step: a specific step; None = the newest.

        Returns:
          (state, meta).
        """
        manager = self._pick(which)
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint under {self.directory}")
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return out.state, out.meta

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._latest.wait_until_finished()
        self._best.wait_until_finished()

    def close(self) -> None:
        """Waits for saves and releases the managers."""
        self.wait_until_finished()
        self._latest.close()
        self._best.close()


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state, for `Checkpointer.restore`."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
