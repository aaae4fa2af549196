"""Tests for the generic Trainer (latentcrs_jax.training.loop) with a tiny fake task."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latentcrs_jax.evaluation import ranking
from latentcrs_jax.training import early_stopping, loop, metrics_io

N_IDS = 6


class FakeTask:
    """Scores = x @ w over 6 ids; targets come from a fixed rule so the model can learn."""

    def __init__(self, nan_at_step=None, batch_size=4, max_traces=False):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(10, 3)).astype(np.float32)
        self.target = (np.argmax(self.x @ rng.normal(size=(3, N_IDS - 1)), 1) + 1).astype(np.int32)
        self.nan_at_step = nan_at_step
        self.batch_size = batch_size
        self.train_step = self._train_step
        if max_traces:  # chex counts traces per function across instances: reset first.
            chex.clear_trace_counter()
            self.train_step = chex.assert_max_traces(self._train_step, n=1)

    def create_state(self, rng):
        params = {"w": jax.random.normal(rng, (3, N_IDS)) * 0.1}
        return loop.TrainState.create(params, optax.sgd(0.5), rng)

    def num_train_batches(self):
        return 3

    def train_batches(self, epoch):
        order = np.random.default_rng([1, epoch]).permutation(10)
        for s in range(0, 10, self.batch_size):
            rows = order[s : s + self.batch_size]
            yield next(ranking.padded_batches({"x": self.x[rows], "t": self.target[rows]}, 4))

    def _train_step(self, state, batch):
        def loss_fn(params):
            logits = batch["x"] @ params["w"]
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["t"])
            return jnp.sum(ce * batch["valid"]) / jnp.sum(batch["valid"])

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        if self.nan_at_step is not None:
            loss = jnp.where(state.step == self.nan_at_step, jnp.nan, loss)
        return state.apply_gradients(grads), {"loss": loss}

    def eval_batches(self, split):
        return ranking.padded_batches({"x": self.x, "t": self.target}, 4)

    def eval_step(self, state, batch):
        scores = batch["x"] @ state.params["w"]
        return ranking.full_ranking_metrics(scores, batch["t"], valid=batch["valid"], ks=(1, 2))

    def on_epoch_start(self, state, epoch):
        return state


def _cfg(**kw):
    base = dict(max_epochs=4, patience=10, early_stop_metric="valid/ndcg@2", seed=3)
    base.update(kw)
    return loop.TrainerConfig(**base)


def _metric_lines(path):
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append({k: v for k, v in rec.items() if "seconds" not in k and "per_s" not in k})
    return out


def test_fit_compiles_once_and_writes_metrics(tmp_path):
    trainer = loop.Trainer(_cfg(), tmp_path)
    res = trainer.fit(FakeTask(max_traces=True))
    assert trainer.train_step_traces == 1  # the padded last batch does not retrace
    lines = _metric_lines(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [0, 1, 2, 3, 4]
    assert "final/test/hit@1" in lines[-1]
    assert lines[-1]["step"] == int(res.best_state.step) and res.epochs_run == 4
    assert lines[3]["train/loss"] < lines[0]["train/loss"]
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["best_epoch"] == res.best_epoch


@pytest.mark.slow
def test_kill_and_resume_gives_identical_metrics(tmp_path):
    straight = loop.Trainer(_cfg(), tmp_path / "a").fit(FakeTask())

    class Crash(Exception):
        pass

    class CrashingTask(FakeTask):
        def train_batches(self, epoch):
            for i, b in enumerate(super().train_batches(epoch)):
                if epoch == 2 and i == 1:
                    raise Crash()
                yield b

    with pytest.raises(Crash):
        loop.Trainer(_cfg(), tmp_path / "b").fit(CrashingTask())
    resumed_trainer = loop.Trainer(_cfg(), tmp_path / "b")
    resumed = resumed_trainer.fit(FakeTask())
    assert _metric_lines(tmp_path / "a" / "metrics.jsonl") == _metric_lines(
        tmp_path / "b" / "metrics.jsonl"
    )
    assert resumed.final_metrics == straight.final_metrics
    chex.assert_trees_all_equal(resumed.best_state.params, straight.best_state.params)
    # Running again after completion changes nothing.
    again = loop.Trainer(_cfg(), tmp_path / "b").fit(FakeTask())
    assert again.final_metrics == straight.final_metrics and again.epochs_run == 4
    # One process: its epochs add up to its clock. Two: to both processes' time.
    first = metrics_io.MetricsWriter(tmp_path / "a" / "metrics.jsonl").read()
    timed = [r for r in first if "time/epoch_seconds" in r]
    clock = sum(r["time/epoch_seconds"] for r in timed)
    assert clock == pytest.approx(timed[-1]["time/fit_seconds"], rel=1e-9)
    assert straight.total_seconds == pytest.approx(clock, rel=1e-9)
    records = metrics_io.MetricsWriter(tmp_path / "b" / "metrics.jsonl").read()
    epoch_seconds = [r["time/epoch_seconds"] for r in records if "time/epoch_seconds" in r]
    assert len(epoch_seconds) == 4
    assert again.total_seconds == pytest.approx(sum(epoch_seconds))
    assert resumed.train_seconds < resumed.total_seconds == again.total_seconds
    to_best = sum(epoch_seconds[: resumed.best_epoch + 1])
    assert resumed.seconds_to_best == pytest.approx(to_best)


def test_cumulative_seconds_counts_every_process():
    # Per-epoch times (this release) and per-process clocks (older runs) that restart on resume.
    new = [
        {"epoch": e, "time/fit_seconds": 1.0, "time/epoch_seconds": s} for e, s in enumerate([2, 3])
    ]
    assert metrics_io.cumulative_seconds(new) == {0: 2.0, 1: 5.0}
    old = [
        {"epoch": 2, "time/fit_seconds": 4.0},  # a second process, resumed after epoch 1
        {"epoch": 0, "time/fit_seconds": 10.0},
        {"epoch": 1, "time/fit_seconds": 25.0},
        {"epoch": 3, "time/fit_seconds": 9.0},
        {"epoch": 4, "final/test/hit@1": 0.5},  # no time key: skipped
    ]
    assert metrics_io.cumulative_seconds(old) == {0: 10.0, 1: 25.0, 2: 29.0, 3: 34.0}
    assert metrics_io.cumulative_seconds([]) == {}


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(FloatingPointError, match="at step 4.*after epoch 0"):
        loop.Trainer(_cfg(), tmp_path).fit(FakeTask(nan_at_step=4))
    lines = _metric_lines(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [0]


def test_early_stopping_stops_and_resumes_state():
    es = early_stopping.EarlyStopping("m", patience=2)
    assert es.update({"m": 0.1}, 0) and not es.should_stop
    assert not es.update({"m": 0.1}, 1)  # equal is not better
    assert not es.update({"m": 0.05}, 2) and es.should_stop
    again = early_stopping.EarlyStopping("m", patience=2)
    again.load_state_dict(json.loads(json.dumps(es.state_dict())))
    assert (again.best, again.best_epoch, again.should_stop) == (0.1, 0, True)
    fresh = early_stopping.EarlyStopping("loss", patience=1, mode="min")
    assert fresh.update({"loss": 3.0}, 0) and fresh.update({"loss": 2.0}, 1)
    with pytest.raises(KeyError, match="not in"):
        fresh.update({"other": 1.0}, 2)
    with pytest.raises(ValueError, match="mode"):
        early_stopping.EarlyStopping("m", patience=1, mode="up")


def test_epochs_until_stop_counts_down_and_resets():
    es = early_stopping.EarlyStopping("m", patience=3)
    assert es.epochs_until_stop == 3
    es.update({"m": 0.2}, 0)
    es.update({"m": 0.1}, 1)
    assert es.epochs_until_stop == 2
    es.update({"m": 0.3}, 2)  # improves: the countdown starts again
    assert es.epochs_until_stop == 3
    for epoch in (3, 4, 5):
        es.update({"m": 0.0}, epoch)
    assert es.should_stop and es.epochs_until_stop == 0


def test_format_seconds():
    assert [metrics_io.format_seconds(s) for s in (0, 44.6, 60, 725, 3599.4, 3600, 34020)] == [
        "0s",
        "45s",
        "1m00s",
        "12m05s",
        "59m59s",
        "1h00m",
        "9h27m",
    ]


def test_run_outlook_names_the_early_stop_and_the_cap():
    # After epoch 81 of 300 with 39 epochs of patience left, 156 s an epoch.
    assert metrics_io.run_outlook(81, 300, 39, 156.0) == (
        "82/300 epochs done, ~2m36s each; stops after epoch 120 (~1h41m) unless it improves, "
        "after epoch 299 (~9h27m) at the latest"
    )
    # Patience reaches past the cap: only the cap is named.
    assert metrics_io.run_outlook(5, 10, 8, 10.0) == (
        "6/10 epochs done, ~10s each; stops after epoch 9 (~40s)"
    )
    assert metrics_io.run_outlook(9, 10, 5, 10.0) == ""  # the last epoch
    assert metrics_io.run_outlook(3, 10, 0, 10.0) == ""  # stopping now


def test_fit_logs_the_run_outlook(tmp_path, caplog):
    with caplog.at_level("INFO"):
        loop.Trainer(_cfg(max_epochs=3, patience=2), tmp_path).fit(FakeTask())
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert any("1/3 epochs done" in m and "after epoch 2 (~" in m for m in epoch_lines)
    last = [m for m in epoch_lines if m.startswith("epoch 2:")]
    assert last and "epochs done" not in last[0]  # nothing is left after the last epoch


class _ClockedTask(FakeTask):
    """A FakeTask whose epoch e ends at 10 e + 5 seconds of a fake clock; it can unlearn after
    `unlearn_after` steps (so the best epoch is an early one) and die in `die_in_epoch`."""

    def __init__(self, clock, unlearn_after=None, die_in_epoch=None):
        super().__init__()
        clock["now"] = 0.0  # the Trainer starts its interval when fit starts
        self.clock = clock
        self.unlearn_after = unlearn_after
        self.die_in_epoch = die_in_epoch

    def on_epoch_start(self, state, epoch):
        self.clock["now"] = 10.0 * epoch + 5.0
        return state

    def train_batches(self, epoch):
        for i, batch in enumerate(super().train_batches(epoch)):
            if epoch == self.die_in_epoch and i == 1:
                raise _Killed()
            yield batch

    def _train_step(self, state, batch):
        new, metrics = super()._train_step(state, batch)
        if self.unlearn_after is None:
            return new, metrics
        sign = jnp.where(state.step < self.unlearn_after, 1.0, -1.0)  # gradient ascent later
        params = jax.tree_util.tree_map(lambda o, n: o + sign * (n - o), state.params, new.params)
        return new.replace(params=params), metrics


class _Killed(Exception):
    pass


def _clocked_trainer(workdir, interval, clock, **kw):
    return loop.Trainer(
        _cfg(checkpoint_interval_s=interval, **kw), workdir, clock=lambda: clock["now"]
    )


def _steps_on_disk(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_throttled_run_killed_between_saves_resumes_to_identical_results(tmp_path, monkeypatch):
    clock = {"now": 0.0}
    every = _clocked_trainer(tmp_path / "every", 0, clock, max_epochs=6)
    straight = every.fit(_ClockedTask(clock))
    assert every.checkpoint_saves == 6  # interval 0: one save per epoch, as without a throttle
    # Interval 25 s: a save is due at the end of epoch 2 (25 s) and of epoch 5 (55 s).
    throttled = _clocked_trainer(tmp_path / "a", 25, clock, max_epochs=6)
    assert throttled.fit(_ClockedTask(clock)).final_metrics == straight.final_metrics
    # Each save also writes the newest best epoch first when it is neither on disk nor the
    # epoch being saved.
    improved, best = set(), -math.inf
    for r in _metric_lines(tmp_path / "every" / "metrics.jsonl")[:6]:
        if r["valid/ndcg@2"] > best:
            improved.add(r["epoch"])
            best = r["valid/ndcg@2"]
    newest_best = [max((e for e in improved if e <= s), default=-1) for s in (2, 5)]
    expected = 2 + sum(p < b < s for b, s, p in zip(newest_best, (2, 5), (-1, 2)))
    assert throttled.checkpoint_saves == expected
    # Killed in epoch 4: no chance to save, so the newest checkpoint is epoch 2's (step 3).
    monkeypatch.setattr(loop.checkpointing.ThrottledSaver, "flush_on_error", lambda self: None)
    with pytest.raises(_Killed):
        _clocked_trainer(tmp_path / "b", 25, clock, max_epochs=6).fit(
            _ClockedTask(clock, die_in_epoch=4)
        )
    assert max(_steps_on_disk(tmp_path / "b")) == 3
    assert [r["epoch"] for r in _metric_lines(tmp_path / "b" / "metrics.jsonl")] == [0, 1, 2, 3]
    monkeypatch.undo()
    resumed = _clocked_trainer(tmp_path / "b", 25, clock, max_epochs=6).fit(_ClockedTask(clock))
    assert resumed.final_metrics == straight.final_metrics
    assert resumed.best_epoch == straight.best_epoch and resumed.epochs_run == 6
    chex.assert_trees_all_equal(resumed.best_state.params, straight.best_state.params)
    assert _metric_lines(tmp_path / "b" / "metrics.jsonl") == _metric_lines(
        tmp_path / "every" / "metrics.jsonl"
    )


@pytest.mark.slow
def test_best_epoch_never_newest_at_a_save_is_the_restored_best(tmp_path):
    clock = {"now": 0.0}
    # Learns for 2 epochs (6 steps), then unlearns: the best is epoch 0 or 1, never saved as
    # the newest epoch with interval 25 s (the first save is due at the end of epoch 2).
    every = _clocked_trainer(tmp_path / "every", 0, clock, max_epochs=5)
    straight = every.fit(_ClockedTask(clock, unlearn_after=6))
    assert straight.best_epoch in (0, 1) and every.checkpoint_saves == 5
    lines = _metric_lines(tmp_path / "every" / "metrics.jsonl")
    best_ndcg = max(r["valid/ndcg@2"] for r in lines[:5])
    assert lines[straight.best_epoch]["valid/ndcg@2"] == best_ndcg > lines[4]["valid/ndcg@2"]
    # The save at the end of epoch 2 writes the best epoch under its own step, then epoch 2;
    # epoch 3 (35 s) waits in memory and is written when epoch 4 raises. The newest
    # checkpoint's early-stopping state names the best epoch, which is on disk.
    killed = _clocked_trainer(tmp_path / "b", 25, clock, max_epochs=5)
    with pytest.raises(_Killed):
        killed.fit(_ClockedTask(clock, unlearn_after=6, die_in_epoch=4))
    assert killed.checkpoint_saves == 3
    assert _steps_on_disk(tmp_path / "b") == [straight.best_epoch + 1, 4]
    ckpt = loop.checkpointing.Checkpointer(tmp_path / "b" / "checkpoints")
    abstract = loop.checkpointing.abstract_like(straight.best_state)
    _, latest_meta = ckpt.restore(abstract)
    best_state, best_meta = ckpt.restore(abstract, which="best")
    ckpt.close()
    assert latest_meta["early_stopping"]["best_epoch"] == best_meta["epoch"]
    assert best_meta["epoch"] == straight.best_epoch
    chex.assert_trees_all_equal(best_state.params, straight.best_state.params)
    resumed = _clocked_trainer(tmp_path / "b", 25, clock, max_epochs=5)
    result = resumed.fit(_ClockedTask(clock, unlearn_after=6))
    assert result.best_epoch == straight.best_epoch
    assert result.final_metrics == straight.final_metrics
    chex.assert_trees_all_equal(result.best_state.params, straight.best_state.params)
    # A run never interrupted with a long interval writes only at its end: the best, the last.
    once = _clocked_trainer(tmp_path / "c", 1e9, clock, max_epochs=5)
    assert once.fit(_ClockedTask(clock, unlearn_after=6)).final_metrics == straight.final_metrics
    assert once.checkpoint_saves == 2 and _steps_on_disk(tmp_path / "c") == [
        straight.best_epoch + 1,
        5,
    ]
