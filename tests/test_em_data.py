"""Frozen user states: pretraining positions without padding to max_len, equal to the padded run."""

import jax
import numpy as np
import pytest

from latentcrs_jax.models import sasrec
from latentcrs_jax.training import em_data


@pytest.mark.slow
def test_user_states_keep_pretraining_positions_without_padding():
    cfg = sasrec.SASRecConfig(num_items=30, max_len=20, hidden=16, num_layers=2)
    params = sasrec.init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    history = rng.integers(1, 31, size=(7, 6)).astype(np.int32)
    history[1, :4] = 0  # left padding
    model = sasrec.SASRec(cfg)
    # The reference forward, jitted (one compilation per shape instead of op-by-op dispatch).
    user_state = jax.jit(lambda x: model.apply(params, x, deterministic=True, method="user_state"))
    padded = em_data.right_align(history, cfg.max_len)  # [7, 20]
    full = user_state(padded)
    got = em_data.user_states(cfg, params, history, batch_size=4)
    np.testing.assert_allclose(got, np.asarray(full), atol=1e-5)
    authors = em_data.user_states(cfg, params, history, pretrain_positions=False, batch_size=4)
    at_start = user_state(history)
    np.testing.assert_allclose(authors, np.asarray(at_start), atol=1e-5)
    assert not np.allclose(authors[0], got[0], atol=1e-3)  # positions 0..5 vs 14..19
    long = rng.integers(1, 31, size=(3, 25)).astype(np.int32)  # longer than max_len
    last = user_state(long[:, -20:])
    np.testing.assert_allclose(em_data.user_states(cfg, params, long), np.asarray(last), atol=1e-5)
