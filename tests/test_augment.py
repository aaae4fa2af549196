"""Tests for latentcrs_jax.data.augment: the ICLRec crop/mask/reorder rules on padded batches."""

import collections

import jax
import numpy as np

from latentcrs_jax.data import augment

W = 12


def _batch(lengths):
    x = np.zeros((len(lengths), W), np.int32)
    for r, n in enumerate(lengths):
        if n:
            x[r, W - n :] = np.arange(1, n + 1) + 100 * r
    return x


def _real(row):
    return row[row > 0]


def test_crop_is_a_contiguous_window_of_python_length():
    lengths = [0, 1, 2, 4, 5, 10, 12]
    x = _batch(lengths)
    for seed in range(20):
        out = np.asarray(augment.crop(jax.random.key(seed), x))
        assert out.shape == x.shape
        for r, n in enumerate(lengths):
            got = _real(out[r])
            want_len = 0 if n == 0 else max(int(0.2 * n), 1)
            assert len(got) == want_len
            assert np.all(out[r, : W - want_len] == 0)  # left-padded
            if n:
                seq = list(_real(x[r]))
                start = seq.index(got[0])
                assert list(got) == seq[start : start + want_len]
                assert start <= n - int(0.2 * n) - 1


def test_mask_sets_python_count_to_zero():
    lengths = [0, 3, 10, 12]
    x = _batch(lengths)
    for seed in range(10):
        out = np.asarray(augment.mask(jax.random.key(seed), x))
        for r, n in enumerate(lengths):
            real = x[r] > 0
            assert np.all(out[r][~real] == 0)
            masked = int(((out[r] == 0) & real).sum())
            assert masked == int(0.7 * n)
            kept = out[r][real]
            assert np.all((kept == 0) | (kept == x[r][real]))


def test_mask_count_uses_float64_semantics():
    x = np.zeros((1, 100), np.int32)
    x[0, 10:] = np.arange(1, 91)  # n = 90: int(0.7 * 90) == 62 in Python, not 63
    out = np.asarray(augment.mask(jax.random.key(0), x))
    assert int((out[0, 10:] == 0).sum()) == 62


def test_reorder_shuffles_one_window():
    lengths = [0, 2, 5, 10, 12]
    x = _batch(lengths)
    changed = 0
    for seed in range(20):
        out = np.asarray(augment.reorder(jax.random.key(seed), x))
        for r, n in enumerate(lengths):
            np.testing.assert_array_equal(np.sort(out[r]), np.sort(x[r]))
            assert np.all(out[r, : W - n] == 0)
            diff = np.nonzero(out[r] != x[r])[0]
            if len(diff):
                changed += 1
                assert diff.max() - diff.min() < int(0.2 * n)
    assert changed > 0


def test_random_augment_uses_all_three_and_is_deterministic():
    x = np.tile(_batch([10]), (300, 1))
    out = np.asarray(augment.random_augment(jax.random.key(3), x))
    again = np.asarray(augment.random_augment(jax.random.key(3), x))
    np.testing.assert_array_equal(out, again)
    kinds = collections.Counter()
    for row in out:
        n_real = int((row > 0).sum())
        if n_real == 2:
            kinds["crop"] += 1
        elif n_real == 3:
            kinds["mask"] += 1
        else:
            assert n_real == 10
            kinds["reorder"] += 1
    assert set(kinds) == {"crop", "mask", "reorder"}
    assert min(kinds.values()) > 60
