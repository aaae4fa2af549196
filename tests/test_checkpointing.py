"""Tests for latentcrs_jax.training.checkpointing: round trips of latest and best states."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from latentcrs_jax.training import checkpointing, loop

TX = optax.adam(1e-3)


def _state(seed):
    params = {"w": jax.random.normal(jax.random.PRNGKey(seed), (3, 4)), "b": jnp.arange(4.0)}
    state = loop.TrainState.create(
        params, TX, jax.random.PRNGKey(seed), {"c": jnp.ones((2, 2)) * seed}
    )
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    return state.apply_gradients(grads)


def _assert_equal_trees(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert x.dtype == y.dtype


def test_round_trip_latest_and_best(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt")
    assert ckpt.latest_step() is None and ckpt.latest_step("best") is None
    s1, s2 = _state(1), _state(2)
    meta1 = {"epoch": 0, "early_stopping": {"best": 0.5, "best_epoch": 0, "bad_epochs": 0}}
    ckpt.save(1, s1, meta1, best=True)
    ckpt.save(2, s2, {"epoch": 1}, best=False)
    ckpt.wait_until_finished()
    abstract = checkpointing.abstract_like(s1)
    latest, meta = ckpt.restore(abstract)
    best, best_meta = ckpt.restore(abstract, which="best")
    _assert_equal_trees(latest, s2)
    _assert_equal_trees(best, s1)
    assert meta == {"epoch": 1} and best_meta == meta1
    assert int(latest.step) == 1 and latest.tx is s1.tx
    ckpt.close()
    # A new Checkpointer over the same directory sees the same steps (resume after restart).
    again = checkpointing.Checkpointer(tmp_path / "ckpt")
    assert again.latest_step() == 2 and again.latest_step("best") == 1
    _assert_equal_trees(again.restore(abstract)[0], s2)
    again.close()


def test_restore_without_checkpoint_is_an_error(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="no latest checkpoint"):
        ckpt.restore(checkpointing.abstract_like(_state(0)))
    with pytest.raises(ValueError, match="which"):
        ckpt.latest_step("newest")
    ckpt.close()


def _steps_on_disk(directory):
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_one_manager_keeps_the_newest_and_the_earlier_of_tied_bests(tmp_path):
    # Epoch 2 only ties epoch 1 (early stopping: not an improvement), so 1 stays the best.
    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt")
    states = {step: _state(step) for step in (1, 2, 3, 4)}
    for step, best in ((1, True), (2, False), (3, False)):
        ckpt.save(step, states[step], {"epoch": step - 1}, best=best)
    ckpt.wait_until_finished()
    assert _steps_on_disk(tmp_path / "ckpt") == [1, 3]
    assert ckpt.latest_step() == 3 and ckpt.latest_step("best") == 1
    abstract = checkpointing.abstract_like(states[1])
    _assert_equal_trees(ckpt.restore(abstract, which="best")[0], states[1])
    ckpt.save(4, states[4], {"epoch": 3}, best=True)  # a new best replaces both
    ckpt.wait_until_finished()
    assert _steps_on_disk(tmp_path / "ckpt") == [4]
    assert ckpt.latest_step() == ckpt.latest_step("best") == 4
    with pytest.raises(ValueError, match="not after 4"):
        ckpt.save(4, states[4], {"epoch": 3})
    ckpt.close()


def test_no_best_before_an_epoch_improves(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt")
    ckpt.save(1, _state(1), {"epoch": 0}, best=False)  # e.g. a NaN first validation metric
    assert ckpt.latest_step() == 1 and ckpt.latest_step("best") is None
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        ckpt.restore(checkpointing.abstract_like(_state(1)), which="best")
    ckpt.close()


def test_two_folder_layout_is_adopted(tmp_path):
    # The earlier layout: one orbax manager per folder, best/<step> and latest/<step>.
    import orbax.checkpoint as ocp

    root = tmp_path / "ckpt"
    s1, s2 = _state(1), _state(2)
    for which, step, state in (("best", 1, s1), ("latest", 2, s2)):
        manager = ocp.CheckpointManager(
            (root / which).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"epoch": step - 1})
        )
        manager.save(step, args=args)
        manager.close()
    ckpt = checkpointing.Checkpointer(root)
    assert _steps_on_disk(root) == [1, 2]
    assert not (root / "best").exists() and not (root / "latest").exists()
    assert ckpt.latest_step() == 2 and ckpt.latest_step("best") == 1
    abstract = checkpointing.abstract_like(s1)
    latest, meta = ckpt.restore(abstract)
    _assert_equal_trees(latest, s2)
    assert meta == {"epoch": 1}
    _assert_equal_trees(ckpt.restore(abstract, which="best")[0], s1)
    ckpt.save(3, _state(3), {"epoch": 2})  # training goes on in the one manager
    ckpt.wait_until_finished()
    assert _steps_on_disk(root) == [1, 3] and ckpt.latest_step("best") == 1
    ckpt.close()


class _Clock:
    """A settable monotonic clock."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _steps_on_disk(directory):
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_throttled_saver_keeps_the_best_in_memory_until_a_save(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt")
    clock = _Clock()
    saver = checkpointing.ThrottledSaver(ckpt, 25.0, clock)
    states = {step: _state(step) for step in range(1, 7)}
    meta = lambda step, best_step: {"epoch": step - 1, "best_step": best_step}
    # step: (seconds at the epoch's end, best so far); saves are due at 30 s and 60 s.
    plan = {1: (10, True), 2: (20, True), 3: (30, False), 4: (40, True), 5: (50, False)}
    best_step = 0
    for step, (now, best) in plan.items():
        clock.now = now
        best_step = step if best else best_step
        # The train step donates its state: the saver must have copied what it keeps.
        state = jax.tree_util.tree_map(lambda x: x + 0, states[step])
        saver.epoch_done(step, state, meta(step, best_step), best=best)
        jax.tree_util.tree_map(lambda x: x.delete(), state)
        ckpt.wait_until_finished()
        on_disk = _steps_on_disk(tmp_path / "ckpt")
        if step < 3:
            assert on_disk == [] and saver.saves == 0
        elif step == 3:  # due: best epoch 2 first under its own step, then epoch 3
            assert on_disk == [2, 3] and saver.saves == 2
        else:  # 40 s and 50 s: not due; the new best (step 4) lives in memory only
            assert on_disk == [2, 3] and ckpt.latest_step("best") == 2
    saver.flush()  # step 4 (best) then step 5 (newest); step 2 and 3 are dropped
    ckpt.wait_until_finished()
    assert _steps_on_disk(tmp_path / "ckpt") == [4, 5] and saver.saves == 4
    abstract = checkpointing.abstract_like(states[1])
    latest, latest_meta = ckpt.restore(abstract)
    best, best_meta = ckpt.restore(abstract, which="best")
    _assert_equal_trees(latest, states[5])
    _assert_equal_trees(best, states[4])
    assert latest_meta == meta(5, 4) and best_meta == meta(4, 4)
    saver.flush()  # nothing new: no write
    assert saver.saves == 4
    ckpt.close()


def test_throttled_saver_interval_zero_saves_every_epoch(tmp_path):
    ckpt = checkpointing.Checkpointer(tmp_path / "ckpt")
    saver = checkpointing.ThrottledSaver(ckpt, 0, _Clock())  # the clock never moves
    for step in (1, 2, 3):
        saver.epoch_done(step, _state(step), {"epoch": step - 1}, best=step == 1)
        assert ckpt.latest_step() == step and saver.saves == step
    assert ckpt.latest_step("best") == 1
    ckpt.close()
    with pytest.raises(ValueError, match="interval"):
        checkpointing.ThrottledSaver(ckpt, -1.0)
