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
