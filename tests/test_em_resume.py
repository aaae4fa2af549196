"""EM stages: kill-and-resume gives the never-killed metrics; runs are deterministic."""

import dataclasses
import functools
import json

import jax
import numpy as np
import pytest
from em_helpers import small_config, synthetic_inputs

from latentcrs_jax.training import checkpointing, em, em_stage, loop, sharding


def _inputs():
    splits, item_emb, intents = synthetic_inputs()
    return em_stage.EMInputs(splits, item_emb, intents, None, upstream="synthetic")


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_em_stage_resumes_to_identical_metrics(tmp_path, monkeypatch):
    cfg = small_config(max_epochs=3)
    stage = em.main_plan()[2]  # alternating E/M: both phases, both optimisers
    mesh = sharding.make_mesh()
    inputs = _inputs()
    every_epoch = dataclasses.replace(cfg, checkpoint_interval_s=0.0)
    straight = em_stage.run_phase(every_epoch, stage, inputs, tmp_path / "a", None, mesh)

    original = em.EMTask.train_batches
    calls = {"n": 0}

    def dying(self, epoch):
        for k, batch in enumerate(original(self, epoch)):
            if epoch == 2 and k == 7:  # in the middle of the M pass of epoch 2
                calls["n"] += 1
                raise _Killed
            yield batch

    monkeypatch.setattr(em.EMTask, "train_batches", dying)
    # The throttle saves epoch 0 only, and the kill leaves no time to save epoch 1: the run
    # resumes from a checkpoint older than the interruption and replays epoch 1.
    saver = checkpointing.ThrottledSaver
    monkeypatch.setattr(saver, "_due", lambda self: self.saves == 0)
    monkeypatch.setattr(saver, "flush_on_error", lambda self: None)
    with pytest.raises(_Killed):
        em_stage.run_phase(cfg, stage, inputs, tmp_path / "b", None, mesh)
    assert calls["n"] == 1
    probe = checkpointing.Checkpointer(tmp_path / "b" / "checkpoints")
    assert probe.latest_step() == 1
    probe.close()
    monkeypatch.undo()
    resumed = em_stage.run_phase(cfg, stage, inputs, tmp_path / "b", None, mesh)
    assert resumed == straight
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda rows: [
        {k: v for k, v in json.loads(r).items() if "seconds" not in k and "per_s" not in k}
        for r in rows
    ]
    assert strip(rows_a) == strip(rows_b)
    # A finished stage is skipped, whatever its checkpoint interval (a speed setting, not in
    # the fingerprint): same metrics, no training.
    monkeypatch.setattr(loop.Trainer, "fit", lambda *a: pytest.fail("a finished phase trained"))
    assert em_stage.run_phase(every_epoch, stage, inputs, tmp_path / "b", None, mesh) == straight


@pytest.mark.slow
def test_same_seed_same_first_step(tmp_path):
    splits, item_emb, intents = synthetic_inputs()
    mesh = sharding.make_mesh()
    cfg = small_config()
    metrics = []
    for _ in range(2):
        task = em.EMTask(cfg, em.main_plan()[2], splits, item_emb, intents, None, mesh)
        state = task.create_state(jax.random.PRNGKey(0))
        batch = next(task.train_batches(0))
        em_pass = batch.pop("pass")
        _, m = jax.jit(functools.partial(task.train_step, em_pass=em_pass))(state, batch)
        metrics.append(jax.device_get(m))
    for k in metrics[0]:
        np.testing.assert_array_equal(metrics[0][k], metrics[1][k])


def test_non_finite_loss_stops_with_step(tmp_path, monkeypatch):
    splits, item_emb, intents = synthetic_inputs()
    splits["train"].x[:] = np.nan
    mesh = sharding.make_mesh()
    task = em.EMTask(small_config(), em.main_plan()[1], splits, item_emb, intents, None, mesh)
    trainer = loop.Trainer(
        loop.TrainerConfig(max_epochs=2, patience=5, early_stop_metric="valid/prior/ndcg@10"),
        tmp_path,
        mesh,
    )
    with pytest.raises(FloatingPointError, match="non-finite training loss .* at step 0"):
        trainer.fit(task)


@pytest.mark.slow
def test_stage_made_with_another_config_starts_over(tmp_path):
    mesh = sharding.make_mesh()
    inputs = _inputs()
    stage = em.main_plan()[0]
    a, b = small_config(max_epochs=1), small_config(max_epochs=1, learning_rate=1e-2)
    first = em_stage.run_phase(a, stage, inputs, tmp_path / "x", None, mesh)
    # Without the restart, b would resume a's finished checkpoint and return a's metrics.
    again = em_stage.run_phase(b, stage, inputs, tmp_path / "x", None, mesh)
    fresh = em_stage.run_phase(b, stage, inputs, tmp_path / "y", None, mesh)
    assert again == fresh and again != first


def test_phase_fingerprint_keeps_the_names_it_was_hashed_with():
    # Finished phases of existing workdirs stay complete: same keys, same values.
    assert em_stage._hashed(em.main_plan()[2]) == {
        "name": "em",
        "phases": ("E", "M"),
        "stop_head": "prior",
        "init_from": "prior",
        "overrides": (),
    }
