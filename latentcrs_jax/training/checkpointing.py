"""One place for orbax: the latest checkpoint (for resume) and the best one (for results).

One orbax `CheckpointManager` over a run's `checkpoints/` folder keeps two steps at most:
  checkpoints/<step>/   the newest saved epoch (orbax `LatestN(1)`) and the best epoch so far
                        (`BestN(1)`); one folder when the newest epoch is the best.
An epoch is written at most once; the newest step is the state to resume from. Each checkpoint holds
`state` (the train state pytree: params, optimizer state, step, RNG and task extras such as the
current centroids), `meta` (JSON: epoch, early-stopping state, data-order seed, and whatever the
trainer adds) and orbax's `metrics` item {"best_rank": step if the epoch was the best so far,
else -1}. "Best" is the trainer's decision, not a metric orbax compares: early stopping (delta
0) does not count an epoch that only ties the best, so the earlier of two tied epochs stays best
(a `BestN` over the validation metric itself would keep the later one).

The two-folder layout (`checkpoints/best/<step>/`, `checkpoints/latest/<step>/`, one manager
each) is adopted on open: its step folders move up one level with the `metrics` item.

`ThrottledSaver` decides which epochs are written: at most one save every `interval_s`
seconds (0: every epoch), and always on `flush` (the end of a run, a non-finite loss, an
exception). Between saves it keeps the newest finished epoch and the newest best epoch in memory
(device copies: the train step donates its state) and writes them on the next save, the best
first under its own step, so steps increase and the newest checkpoint's early-stopping state
never names a best that is not on disk. A run killed between saves resumes from the newest saved
epoch and replays the epochs after it (the trainer's resume contract makes them identical).

Restore precedence (the trainer applies it): the run's own newest checkpoint in the workdir if
there is one (automatic resume), otherwise a fresh state from the task (which may
itself initialise from an earlier stage's artefacts). Saves are asynchronous; call
`wait_until_finished()` before reading them or exiting.
"""

import dataclasses
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any

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


@dataclasses.dataclass
class _Epoch:
    """A finished epoch kept in memory until it is written."""

    step: int
    state: Any  # a device copy of the train state
    meta: dict
    best: bool


class ThrottledSaver:
    """Writes finished epochs to a `Checkpointer` at most every `interval_s` seconds.

    The best epoch is never lost: an epoch that was the best so far and is not on disk is kept
    in memory until the next save writes it (under its own step, before the newest epoch).
    Every process must call `epoch_done` and `flush` alike: whether a save is due is process
    0's decision, shared with the others (saves are collective).
    """

    def __init__(
        self,
        ckpt: Checkpointer,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        """Args: ckpt: where to write; interval_s: seconds between saves, 0 = every epoch;
        clock: seconds (monotonic), for the interval."""
        if not interval_s >= 0:
            raise ValueError(f"checkpoint interval must be >= 0 seconds, got {interval_s}")
        self.ckpt = ckpt
        self.interval_s = float(interval_s)
        self._clock = clock
        self._last = clock()
        self._on_disk = ckpt.latest_step() or 0  # the newest step on disk (0: none)
        self._newest: _Epoch | None = None  # the newest finished epoch, if not on disk
        self._best: _Epoch | None = None  # the newest best epoch, if not on disk
        self.saves = 0  # checkpoints written by this saver

    def epoch_done(self, step: int, state, meta: dict, *, best: bool) -> None:
        """A finished epoch: written now if a save is due, else kept in memory.

        Args:
          step: the epoch's step id (increasing; the trainer uses the epoch + 1).
          state: the train state after the epoch (copied if kept: the caller may donate it).
          meta: JSON-serialisable dict.
          best: the epoch is the best so far.
        """
        if self._due():
            self._write(_Epoch(step, state, meta, best))
            return
        self._newest = _Epoch(step, jax.tree_util.tree_map(lambda x: x.copy(), state), meta, best)
        if best:
            self._best = self._newest

    def flush(self) -> None:
        """Writes the epochs kept in memory (no-op when the newest epoch is on disk)."""
        if self._newest is not None:
            self._write(self._newest)

    def flush_on_error(self) -> None:
        """`flush` while an exception propagates: with one process only (another process may
        not reach the collective save), and a failure is logged, not raised."""
        if self._newest is None or jax.process_count() > 1:
            return
        try:
            self.flush()
            self.ckpt.wait_until_finished()
        except Exception:  # noqa: BLE001 - the original exception matters more
            logging.exception("could not save the last finished epoch")

    def _due(self) -> bool:
        due = self.interval_s == 0 or self._clock() - self._last >= self.interval_s
        return distributed.same_as_process_0(due)

    def _write(self, epoch: _Epoch) -> None:
        kept = self._best
        if not epoch.best and kept is not None and kept.step > self._on_disk:
            # The best epoch first, under its own step: the newest epoch's early-stopping
            # state names it, so it must be on disk before (or with) the newest.
            self._save(kept)
        self._save(epoch)
        self._newest = self._best = None
        self._last = self._clock()

    def _save(self, epoch: _Epoch) -> None:
        self.ckpt.save(epoch.step, epoch.state, epoch.meta, best=epoch.best)
        self._on_disk = epoch.step
        self.saves += 1


def abstract_like(state):
    """ShapeDtypeStructs (with shardings) of a concrete state, for `Checkpointer.restore`."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
