"""One Trainer for every training run: epochs, the jitted step, eval, early stopping, checkpoints.

A Task (see `Task`) says *what* is trained: how to create the state, the host batches of an
epoch, a pure `train_step(state, batch) -> (state, metrics)`, a pure `eval_step(state, batch) ->
{name: (sum, count)}`, and an optional host hook run at the start of each epoch (e.g. K-means).
The Trainer says *how*: it jits the step once (donated state, replicated out_shardings, batches
sharded over the `data` mesh), runs epochs, evaluates every epoch (with the task's
`epoch_eval_step` when it has one), stops early, checkpoints, and resumes automatically.

Resume contract: a finished epoch is checkpointed at most every `checkpoint_interval_s`
seconds (0: every epoch) and always at the end of the run, when early stopping stops it, on a
non-finite loss and (one process) on an exception; the best epoch is kept in memory until it is
written (`checkpointing.ThrottledSaver`). Everything an epoch depends on is either in the state
(params, optimizer state, step, base RNG, task extras) or a pure function of (seed, epoch)
(data order, negatives, augmentation keys folded from the step), so a run killed at any moment
and restarted from its newest checkpoint replays the epochs after it and reproduces the
never-killed run bit for bit (metrics.jsonl is cut back to the checkpoint's epoch on resume).

Non-finite loss: the losses are checked every `check_every_steps` steps and at the end of each
epoch; the first bad step stops the run with FloatingPointError naming the step, after the
finished epochs kept in memory are written, so the last good epoch (the previous one) is on disk.
"""

import dataclasses
import functools
import math
import pathlib
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from latentcrs_jax import fileio
from latentcrs_jax.evaluation import ranking
from latentcrs_jax.training import checkpointing, early_stopping, metrics_io, sharding

# ----------------------------------------------------------------------------------------------
# Train state and the Task interface.
# ----------------------------------------------------------------------------------------------


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: int32 scalar, optimizer steps taken.
      params: model parameters (Flax variables).
      opt_state: optax state.
      rng: uint32[2] base PRNG key; steps fold `step` into it (never split in place).
      extras: task-owned arrays carried through checkpoints (e.g. current centroids).
      tx: the optax transformation (static).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    extras: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params, tx, rng, extras=None) -> "TrainState":
        """A fresh state at step 0."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=rng,
            extras={} if extras is None else extras,
            tx=tx,
        )

    def apply_gradients(self, grads) -> "TrainState":
        """One optimizer update."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


class Task(Protocol):
    """What a training run trains (the backbone, an EM phase); the Trainer owns the loop.

    A task may also declare `passes: tuple[str, ...]` (e.g. an EM phase's ("E", "M")); then
    each host batch carries a "pass" key (a str, removed before placement) and the step is
    `train_step(state, batch, pass_name)`, jitted once per pass. Train metrics are logged per
    pass as "train/<pass>/<name>", plus "train/loss" over all steps.
    """

    def create_state(self, rng: jax.Array) -> TrainState:
        """Initial state (traceable: the Trainer jits it with replicated out_shardings)."""

    def train_batches(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Host batches of one epoch; a pure function of (seed, epoch), fixed shapes, each with
        a "valid: bool[B]" row mask."""

    def num_train_batches(self) -> int:
        """Batches per epoch (for progress and ETA)."""

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """Pure step; metrics are scalars and must include "loss"."""

    def eval_batches(self, split: str) -> Iterable[dict[str, np.ndarray]]:
        """Host eval batches (with a "valid" row mask) of a split."""

    def eval_step(self, state: TrainState, batch: dict) -> ranking.Sums:
        """Pure eval step returning {name: (sum, count)}."""

    def on_epoch_start(self, state: TrainState, epoch: int) -> TrainState:
        """Host hook before each epoch (may update `state.extras`); return the state."""

    # Optional: `epoch_eval_step(state, batch) -> Sums`, the per-epoch evaluation when some of
    # `eval_step`'s metrics cannot change during the run (e.g. the heads of frozen networks).
    # It returns the others; the Trainer copies the left-out ones from the run's first
    # evaluation, which uses `eval_step`.


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """Loop settings.

    Attributes:
      max_epochs: upper bound on epochs.
      patience: early-stopping patience in epochs.
      early_stop_metric: e.g. "valid/ndcg@20".
      early_stop_mode: "max" or "min".
      eval_splits: splits evaluated every epoch.
      final_splits: splits evaluated with the best state at the end.
      seed: seed of the initial state's PRNG key.
      check_every_steps: how often (steps) the host checks losses for NaN/inf.
      log_every_s: progress log interval in seconds.
      checkpoint_interval_s: at most one checkpoint save per this many seconds; 0 = every
        epoch (the end of the run is always saved; a speed setting, results do not change).
    """

    max_epochs: int
    patience: int
    early_stop_metric: str = "valid/ndcg@20"
    early_stop_mode: str = "max"
    eval_splits: tuple[str, ...] = ("valid",)
    final_splits: tuple[str, ...] = ("valid", "test")
    seed: int = 1
    check_every_steps: int = 50
    log_every_s: float = 30.0
    checkpoint_interval_s: float = 60.0


@dataclasses.dataclass
class FitResult:
    """What `Trainer.fit` returns.

    Attributes:
      best_state: the state of the best epoch (restored from its checkpoint).
      best_epoch: its epoch index.
      final_metrics: "<split>/<metric>" of the best state on `final_splits`.
      epochs_run: epochs finished in total (including ones before a resume).
      train_seconds: wall time of the training epochs run by this process.
      total_seconds: wall time of all epochs, over every process that worked on the run
        (`metrics_io.cumulative_seconds` over metrics.jsonl, which process 0 writes; nan
        where this process cannot see that file).
      seconds_to_best: the same up to the end of the best epoch.
    """

    best_state: TrainState
    best_epoch: int
    final_metrics: dict[str, float]
    epochs_run: int
    train_seconds: float
    total_seconds: float = math.nan
    seconds_to_best: float = math.nan


# ----------------------------------------------------------------------------------------------
# The trainer.
# ----------------------------------------------------------------------------------------------


class Trainer:
    """Runs a Task in `workdir` (the run's directory)."""

    def __init__(
        self, cfg: TrainerConfig, workdir: str | pathlib.Path, mesh=None, clock=time.monotonic
    ):
        """`clock`: monotonic seconds for the checkpoint interval (tests pass a fake one)."""
        self.cfg = cfg
        self.workdir = pathlib.Path(workdir)
        self.mesh = mesh if mesh is not None else sharding.make_mesh()
        self.clock = clock
        self.train_step_traces = 0
        self.checkpoint_saves = 0  # checkpoints written by the last `fit`

    def _jit_steps(self, task: Task):
        repl = sharding.replicated(self.mesh)

        def counted_train_step(state, batch, pass_name=None):
            self.train_step_traces += 1
            if pass_name is None:
                return task.train_step(state, batch)
            return task.train_step(state, batch, pass_name)

        # One jitted step per pass (a task with `passes` trains different parts in turns).
        train_steps = {
            pass_name: jax.jit(
                functools.partial(counted_train_step, pass_name=pass_name),
                donate_argnums=(0,),
                out_shardings=(repl, repl),
            )
            for pass_name in getattr(task, "passes", None) or (None,)
        }
        eval_step = jax.jit(task.eval_step, out_shardings=repl)
        epoch_eval = getattr(task, "epoch_eval_step", None)
        epoch_eval_step = (
            eval_step if epoch_eval is None else jax.jit(epoch_eval, out_shardings=repl)
        )
        return train_steps, eval_step, epoch_eval_step

    def evaluate(self, task: Task, eval_step, state: TrainState, split: str) -> dict[str, float]:
        """Full-ranking metrics of `state` on one split, keys "<split>/<metric>"."""
        result = ranking.evaluate(
            lambda b: eval_step(state, b),
            task.eval_batches(split),
            place=lambda b: sharding.place_batch(b, self.mesh),
        )
        return {f"{split}/{k}": v for k, v in result.items()}

    def _check_finite(self, pending: list[dict], first_step: int, saver) -> None:
        losses = np.asarray(jax.device_get([m["loss"] for m in pending]), np.float64)
        bad = np.nonzero(~np.isfinite(losses))[0]
        if len(bad):
            ckpt = saver.ckpt
            saver.flush()  # the previous epoch, the last good one
            ckpt.wait_until_finished()
            step = first_step + int(bad[0])
            last = ckpt.latest_step()
            raise FloatingPointError(
                f"non-finite training loss {losses[bad[0]]} at step {step}; stopping. The last "
                f"good checkpoint ({'none' if last is None else f'after epoch {last - 1}'}) is "
                f"kept in {ckpt.directory}"
            )

    def fit(self, task: Task) -> FitResult:
        """Trains with resume, early stopping and checkpoints; returns the best state."""
        cfg = self.cfg
        repl = sharding.replicated(self.mesh)
        steps = self._jit_steps(task)
        rng = jax.random.PRNGKey(cfg.seed)
        abstract = jax.eval_shape(task.create_state, rng)
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract
        )
        ckpt = checkpointing.Checkpointer(self.workdir / "checkpoints")
        stopper = early_stopping.EarlyStopping(
            cfg.early_stop_metric, cfg.patience, cfg.early_stop_mode
        )
        writer = metrics_io.MetricsWriter(self.workdir / "metrics.jsonl")

        if ckpt.latest_step() is not None:
            state, meta = ckpt.restore(abstract)
            start_epoch = int(meta["epoch"]) + 1
            stopper.load_state_dict(meta["early_stopping"])
            writer.truncate_after_epoch(int(meta["epoch"]))
            logging.info("resumed from epoch %d (step %d)", meta["epoch"], int(state.step))
        else:
            state = jax.jit(task.create_state, out_shardings=repl)(rng)
            start_epoch = 0
            writer.truncate_after_epoch(-1)
            n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
            logging.info("fresh start: %d parameters", n_params)

        saver = checkpointing.ThrottledSaver(ckpt, cfg.checkpoint_interval_s, self.clock)
        try:
            return self._fit(task, state, start_epoch, abstract, saver, stopper, writer, steps)
        except BaseException:
            saver.flush_on_error()  # the newest finished epoch, so a rerun resumes after it
            raise
        finally:
            ckpt.close()  # lets in-flight saves finish even when training raised
            self.checkpoint_saves = saver.saves

    def _fit(self, task, state, start_epoch, abstract, saver, stopper, writer, steps):
        cfg = self.cfg
        ckpt = saver.ckpt
        train_steps, eval_step, epoch_eval_step = steps
        first_eval: dict[str, dict] = {}  # split -> this process's first (full) evaluation
        t0 = t_last = time.perf_counter()
        epochs_run = start_epoch
        for epoch in range(start_epoch, cfg.max_epochs):
            if stopper.should_stop:
                break
            state = task.on_epoch_start(state, epoch)
            first_step = int(state.step)
            progress = metrics_io.ProgressLogger(
                f"epoch {epoch}", task.num_train_batches(), cfg.log_every_s
            )
            pending: list[dict] = []
            passes: list[str | None] = []
            checked = 0
            for i, batch in enumerate(task.train_batches(epoch)):
                n_rows = int(np.sum(batch["valid"]))
                pass_name = batch.pop("pass", None)
                step_fn = train_steps[pass_name]
                state, metrics = step_fn(state, sharding.place_batch(batch, self.mesh))
                pending.append(metrics)
                passes.append(pass_name)
                progress.update(i, n_rows, sync=lambda m=metrics: jax.block_until_ready(m))
                if len(pending) - checked >= cfg.check_every_steps:
                    self._check_finite(pending[checked:], first_step + checked, saver)
                    checked = len(pending)
            self._check_finite(pending[checked:], first_step + checked, saver)
            host = jax.device_get(pending)
            record = {"train/loss": float(np.mean([m["loss"] for m in host]))}
            for pass_name in dict.fromkeys(passes):
                rows = [m for m, p in zip(host, passes) if p == pass_name]
                prefix = "train/" if pass_name is None else f"train/{pass_name}/"
                record.update({prefix + k: float(np.mean([m[k] for m in rows])) for k in rows[0]})
            record["train/samples_per_s"] = progress.rate()  # after the sync of the check
            t_eval = time.perf_counter()
            for split in cfg.eval_splits:
                if split in first_eval:  # what epoch_eval_step leaves out keeps its values
                    part = self.evaluate(task, epoch_eval_step, state, split)
                    record.update({**first_eval[split], **part})
                else:
                    first_eval[split] = self.evaluate(task, eval_step, state, split)
                    record.update(first_eval[split])
            record["eval/seconds"] = time.perf_counter() - t_eval
            now = time.perf_counter()
            record["time/fit_seconds"] = now - t0  # this process, with eval
            # Since the previous record (its checkpoint save included): they add up to the
            # process's time/fit_seconds, and over processes to the run's wall time.
            record["time/epoch_seconds"], t_last = now - t_last, now
            improved = stopper.update(record, epoch)
            meta = {
                "epoch": epoch,
                "step": int(state.step),
                "early_stopping": stopper.state_dict(),
                "data_order": {"seed": cfg.seed, "epoch": epoch},
                "metrics": {k: v for k, v in record.items() if math.isfinite(v)},
            }
            saver.epoch_done(epoch + 1, state, meta, best=improved)
            writer.write(epoch, int(state.step), record)
            epochs_run = epoch + 1
            if stopper.should_stop:
                suffix = ", stopping early"
            else:  # How long the run can still take (nothing to say once it stops).
                per_epoch = (now - t0) / (epochs_run - start_epoch)
                outlook = metrics_io.run_outlook(
                    epoch, cfg.max_epochs, stopper.epochs_until_stop, per_epoch
                )
                suffix = f"; {outlook}" if outlook else ""
            logging.info(
                "epoch %d: loss %.4f, %s %.4f (best %.4f @ %d)%s",
                epoch,
                record["train/loss"],
                cfg.early_stop_metric,
                record[cfg.early_stop_metric],
                stopper.best,
                stopper.best_epoch,
                suffix,
            )
            if stopper.should_stop:
                break
        saver.flush()  # the end of the run (max_epochs or an early stop) is always on disk
        train_seconds = time.perf_counter() - t0
        ckpt.wait_until_finished()

        best_state, best_meta = ckpt.restore(abstract, which="best")
        final: dict[str, float] = {}
        for split in cfg.final_splits:
            final.update(self.evaluate(task, eval_step, best_state, split))
        writer.write(epochs_run, int(best_state.step), {f"final/{k}": v for k, v in final.items()})
        if jax.process_index() == 0:
            fileio.write_json(
                self.workdir / "final_metrics.json",
                {"best_epoch": best_meta["epoch"], "epochs_run": epochs_run, **final},
            )
        elapsed = metrics_io.cumulative_seconds(writer.read())
        best_epoch = int(best_meta["epoch"])
        return FitResult(
            best_state,
            best_epoch,
            final,
            epochs_run,
            train_seconds,
            total_seconds=max(elapsed.values(), default=math.nan),
            seconds_to_best=elapsed.get(best_epoch, math.nan),
        )
