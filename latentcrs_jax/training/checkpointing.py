"""One place for orbax: the latest checkpoint (for resume) and the best one (for results).

One orbax `CheckpointManager` over a run's `checkpoints/` folder keeps two steps at most:
  checkpoints/<step>/   the newest epoch (orbax `LatestN(1)`) and the best epoch so far
                        (`BestN(1)`); one folder when the newest epoch is the best.
Every epoch is written once; the newest step is the state to resume from. Each checkpoint holds
`state` (the train state pytree: params, optimizer state, step, RNG and task extras such as the
current centroids), `meta` (JSON: epoch, early-stopping state, data-order seed, and whatever the
trainer adds) and orbax's `metrics` item {"best_rank": step if the epoch was the best so far,
else -1}. "Best" is the trainer's decision, not a metric orbax compares: early stopping (delta
0) does not count an epoch that only ties the best, so the earlier of two tied epochs stays best
(a `BestN` over the validation metric itself would keep the later one).

The two-folder layout (`checkpoints/best/<step>/`, `checkpoints/latest/<step>/`, one manager
each) is adopted on open: its step folders move up one level with the `metrics` item.

Restore precedence (the trainer applies it): the run's own newest checkpoint in the workdir if
there is one (automatic resume), otherwise a fresh state from the task (which may
itself initialise from an earlier stage's artefacts). Saves are asynchronous; call
`wait_until_finished()` before reading them or exiting.
"""

import pathlib
import shutil

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as keep

from latentcrs_jax import fileio
from latentcrs_jax.training import distributed

_RANK = "best_rank"  # the step of an epoch that was the best so far, -1 for the others
_LEGACY = ("best", "latest")  # the folders of the two-folder layout


def _best_rank(metrics) -> float:
    return float(metrics[_RANK])


def _manager(directory: pathlib.Path) -> ocp.CheckpointManager:
    policy = keep.AnyPreservationPolicy(
        [keep.LatestN(n=1), keep.BestN(get_metric_fn=_best_rank, n=1)]
    )
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(
            create=True, best_fn=_best_rank, best_mode="max", preservation_policy=policy
        ),
    )


def _adopt_two_folder_layout(directory: pathlib.Path) -> None:
    """Moves `best/<step>` and `latest/<step>` (the two-folder layout) up into `directory`.

    Process 0 moves; every process meets at a barrier after it (each time, so that no process
    skips it by looking after process 0 has moved everything).
    """
    if jax.process_index() == 0:
        for which in _LEGACY:
            old = directory / which
            if not old.is_dir():
                continue
            for step_dir in sorted(p for p in old.iterdir() if p.name.isdigit()):
                step = int(step_dir.name)
                rank = step if which == "best" else -1
                # Where the manager keeps a step's metrics: the item "metrics", one JSON file
                # of that name (orbax's METRIC_ITEM_NAME and JsonCheckpointHandler).
                (step_dir / "metrics").mkdir(exist_ok=True)
                fileio.write_json(step_dir / "metrics" / "metrics", {_RANK: rank})
                step_dir.rename(directory / step_dir.name)
                logging.info("checkpoint %d moved from %s/ (%s)", step, which, directory)
            shutil.rmtree(old)  # what is left: the old manager's own files
    distributed.barrier("checkpoint layout")


class Checkpointer:
    """The latest and best checkpoints of one training run."""

    def __init__(self, directory: str | pathlib.Path):
        self.directory = pathlib.Path(directory)
        _adopt_two_folder_layout(self.directory)
        self._manager = _manager(self.directory)

    def latest_step(self, which: str = "latest") -> int | None:
        """The newest saved step ("latest") or the best epoch's step ("best"), or None."""
        if which not in ("latest", "best"):
            raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
        if which == "latest":
            return self._manager.latest_step()
        self.wait_until_finished()  # the best step's metrics are read from its folder
        best = self._manager.best_step()
        if best is None or _best_rank(self._manager.metrics(best)) < 0:
            return None  # no epoch has been the best (every metric so far was NaN)
        return best

    def save(self, step: int, state, meta: dict, *, best: bool = False) -> None:
        """Saves `state` and `meta` once, as the best checkpoint if `best`.

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
        if not self._manager.save(step, args=args, metrics={_RANK: step if best else -1}):
            raise ValueError(f"checkpoint {step} not saved: not after {self.latest_step()}")
        logging.info("checkpoint %d saved%s", step, " (best)" if best else "")

    def restore(self, abstract_state, *, which: str = "latest", step: int | None = None):
        """Restores (state, meta).

        Args:
          abstract_state: pytree of `jax.ShapeDtypeStruct` (with shardings) like the state.
          which: "latest" (the newest checkpoint) or "best".
          step: a specific kept step; None = the one `which` names.

        Returns:
          (state, meta).
        """
        if step is None:
            step = self.latest_step(which)
        if step is None:
            raise FileNotFoundError(f"no {which} checkpoint under {self.directory}")
        out = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return out.state, out.meta

    def wait_until_finished(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves and releases the manager."""
        self.wait_until_finished()
        self._manager.close()


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state, for `Checkpointer.restore`."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
