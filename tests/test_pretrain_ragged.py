"""Ragged histories of backbone training (data/ragged.py, pretrain/data.py, pretrain/task.py):
per-batch left padding gives the arrays and the eval metrics of padding every user to the
longest history, with a bounded set of batch widths."""

import chex
import jax
import numpy as np
import pytest

from latentcrs_jax.data import ragged
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import sharding
from latentcrs_jax.training.pretrain import config as pretrain_config
from latentcrs_jax.training.pretrain import data as pretrain_data
from latentcrs_jax.training.pretrain import stage as pretrain_stage

N_ITEMS = 60
MODEL = sasrec.SASRecConfig(num_items=N_ITEMS, max_len=4, hidden=8, num_layers=1, num_heads=2)


def _sequences(num_users=29, seed=3):
    """Lengths 5..57 (a few long users, so that batches need different widths)."""
    rng = np.random.default_rng(seed)
    lengths = [int(rng.choice([5, 6, 8, 11, 19, 30, 57])) for _ in range(num_users)]
    return [rng.choice(np.arange(1, N_ITEMS + 1), size=n, replace=False) for n in lengths]


def _cfg(**kw):
    base = dict(loss="ce", batch_size=8, eval_batch_size=8, num_intents=3, ks=(5, 10, 15, 20))
    return pretrain_config.PretrainConfig(**(base | kw))


def test_ragged_rows_left_pad_like_the_dense_array():
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 9, size=n) for n in (0, 1, 5, 9, 3, 0, 12)]
    for keep_last in (0, 4):
        r = ragged.Ragged.from_rows(rows, keep_last=keep_last)
        kept = [x[-keep_last:] if keep_last else x for x in rows]
        np.testing.assert_array_equal(r.lengths, [len(x) for x in kept])
        assert r.max_length == max(len(x) for x in kept) and len(r) == len(rows)
        for width in (1, 4, 7, 12, 15):
            for sel in (np.arange(len(rows)), np.array([6, 2, 2, 0]), np.zeros(0, int)):
                want = pretrain_data.left_pad([kept[i] for i in sel], width)
                np.testing.assert_array_equal(r.left_padded(sel, width), want)
    empty = ragged.Ragged.from_rows([])
    assert len(empty) == 0 and empty.max_length == 0


def test_padded_width_is_the_smallest_allowed_width():
    base, cap = 4, 37
    allowed = {4, 8, 16, 32, 37}
    for needed in range(cap + 1):
        w = ragged.padded_width(needed, base, cap)
        assert w in allowed and w >= needed
        assert all(a < needed for a in allowed if a < w)  # nothing smaller fits
    assert ragged.padded_width(3, 8, 5) == 8  # every row shorter than base: base
    with pytest.raises(ValueError, match="does not fit"):
        ragged.padded_width(38, base, cap)
    with pytest.raises(ValueError, match="base"):
        ragged.padded_width(1, 0, cap)


@pytest.mark.parametrize("window", [0, 9])
def test_train_full_batches_equal_the_longest_padded_array(window):
    seqs = _sequences()
    data = pretrain_data.build_sequence_data(seqs, N_ITEMS, MODEL.max_len, window)
    train_in = [seqs[u][:-3] for u in data.train_users]
    longest = max(len(s) for s in train_in)
    assert data.full_width == (window or longest) and longest > window
    dense = pretrain_data.left_pad(train_in, data.full_width)  # what used to be stored
    task = pretrain_stage.make_task(data, MODEL, _cfg(loss="iclrec"), sharding.make_mesh())
    cfg = task.cfg
    order = np.random.default_rng([cfg.seed, 0, 0]).permutation(len(data.train_users))
    batches = list(task.train_batches(0))
    assert len(batches) == -(-len(order) // cfg.batch_size)
    for i, batch in enumerate(batches):
        rows = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        want = np.zeros((cfg.batch_size, data.full_width), np.int32)
        want[: len(rows)] = dense[rows]
        np.testing.assert_array_equal(batch["full"], want)
        np.testing.assert_array_equal(batch["full"][:, -MODEL.max_len :], batch["input"])


def _dense_exclude_batches(task, split):
    """The eval batches with `exclude` padded to the split's longest prefix (the old arrays)."""
    e = task.data.eval[split]
    dense = pretrain_data.left_pad([e["exclude"].row(r) for r in range(len(e["exclude"]))],
                                   e["exclude"].max_length)  # fmt: skip
    order = np.arange(len(e["target"]))
    if task.cfg.length_buckets:
        order = np.argsort((e["input"] > 0).sum(1), kind="stable")
    bs = task.cfg.eval_batch_size
    for i, batch in enumerate(task.eval_batches(split)):
        rows = order[i * bs : (i + 1) * bs]
        ex = np.zeros((bs, dense.shape[1]), np.int32)
        ex[: len(rows)] = dense[rows]
        yield rows, batch, dict(batch, exclude=ex)


@pytest.mark.parametrize("buckets", [0, 3])
def test_ragged_exclude_gives_the_metrics_of_the_dense_one(buckets):
    # Per-batch widths from {L, 2L, 4L, ..., longest prefix}; the masked items and so every
    # metric sum are those of the old users x longest-prefix array, history masked or not,
    # items chunked or not.
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    cap = data.eval["test"]["exclude"].max_length
    allowed = {MODEL.max_len * 2**k for k in range(8) if MODEL.max_len * 2**k < cap} | {cap}
    for mask, chunk in ((True, 0), (False, 0), (True, 7)):
        cfg = _cfg(length_buckets=buckets, mask_history_in_eval=mask, eval_item_chunk=chunk)
        task = pretrain_stage.make_task(data, MODEL, cfg, mesh)
        state = task.create_state(jax.random.PRNGKey(2))
        step = jax.jit(task.eval_step)
        widths, new, old = set(), [], []
        for rows, batch, dense in _dense_exclude_batches(task, "test"):
            width = batch["exclude"].shape[1]
            longest = int(data.eval["test"]["exclude"].lengths[rows].max())
            assert width in allowed and width >= longest
            widths.add(width)
            new.append(jax.device_get(step(state, sharding.place_batch(batch, mesh))))
            old.append(jax.device_get(step(state, sharding.place_batch(dense, mesh))))
        chex.assert_trees_all_equal(new, old)
        assert len(widths) >= 2  # several widths occurred: not a vacuous comparison
        assert sum(float(s["hit@20"][0]) for s in new) > 0
