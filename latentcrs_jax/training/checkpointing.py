"""One place for orbax: the latest checkpoint (for resume) and the best one (for results).

Layout under a run's directory:
  checkpoints/best/<step>/      the state of the best epoch so far (max_to_keep=1)
  checkpoints/latest/<step>/    the state after the last epoch that was not a best one
                                (max_to_keep=1; older than best/ when the last epoch was best)
Every epoch is written once: into best/ when it is the best so far, else into latest/. The
newest of the two is the state to resume from. Each checkpoint holds `state` (the train state
pytree: params, optimizer state, step, RNG and task extras such as the current centroids) and
`meta` (JSON: epoch, early-stopping state, data-order seed, and whatever the trainer adds).

Restore precedence (the trainer applies it): the run's own newest checkpoint in the workdir if
there is one (automatic resume), otherwise a fresh state from the task (which may
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
    """The latest and best checkpoints of one training run."""

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        self._latest = _manager(self.directory / "latest")
        self._best = _manager(self.directory / "best")

    def _pick(self, which: str) -> ocp.CheckpointManager:
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        return self._latest if which == "latest" else self._best

    def latest_step(self, which: str = "latest") -> int | None:
        """The newest saved step of `which`, or None: "best", or "latest" (the newest of all)."""
        best = self._best.latest_step()
        if self._pick(which) is self._best:
            return best
        steps = [s for s in (self._latest.latest_step(), best) if s is not None]
        return max(steps) if steps else None

    def save(self, step: int, state, meta: dict, *, best: bool = False) -> None:
        """Saves `state` and `meta` once: as the best checkpoint if `best`, else as latest.

        Args:
          step: monotonically increasing id (the trainer uses the epoch + 1).
          state: pytree of arrays.
          meta: JSON-serialisable dict.
          best: the state is the best so far (it replaces the best checkpoint).
        """
        # Every earlier save is finished first, so a checkpoint never claims (in its
        # early-stopping state) a best that is not on disk. A kill during a save resumes from
        # the previous epoch's checkpoint, which deterministic training replays identically.
        self.wait_until_finished()
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        (self._best if best else self._latest).save(step, args=args)
        logging.info("checkpoint %d saved%s", step, " (best)" if best else "")

    def restore(self, abstract_state, *, which: str = "latest", step: int | None = None):
        """Restores (state, meta).

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) like the state.
          which: "latest" (the newest checkpoint of all) or "best".
          step: a specific step of `which`'s folder; None = the newest.

        Returns:
          (state, meta).
        """
        manager = self._pick(which)
        if step is None:
            step = self.latest_step(which)
            if step is not None and step == self._best.latest_step():
                manager = self._best
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
