"""Tests for latentcrs_jax.data.augment: the ICLRec crop/mask/reorder rules on padded batches."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def _tail_counts(out):
    return collections.Counter(map(tuple, np.asarray(out)))


def _total_variation(a, b):
    ca, cb = _tail_counts(a), _tail_counts(b)
    return 0.5 * sum(abs(ca[k] - cb[k]) for k in set(ca) | set(cb)) / len(a)


@pytest.mark.parametrize(("width", "n", "out_len"), [(14, 12, 5), (32, 30, 6), (12, 4, 8)])
def test_random_augment_suffix_has_the_distribution_of_the_tail(width, n, out_len):
    x = np.zeros((6000, width), np.int32)
    x[:, width - n :] = np.arange(1, n + 1)
    tail = augment.random_augment(jax.random.key(0), x)[:, -out_len:]
    fast = augment.random_augment_suffix(jax.random.key(1), x, out_len)
    assert fast.shape == (6000, out_len)
    # Same distribution: as close to the tail as a second independent tail sample is.
    noise = _total_variation(tail, augment.random_augment(jax.random.key(2), x)[:, -out_len:])
    assert _total_variation(tail, fast) < max(1.5 * noise, 0.03)


def test_mask_suffix_count_and_marginals():
    n, out_len, k = 30, 6, int(0.7 * 30)
    x = np.zeros((20000, 32), np.int32)
    x[:, 32 - n :] = np.arange(1, n + 1)
    counts = augment._count_table(0.7, 32)
    out = np.asarray(augment._mask_suffix(jnp.asarray(x), jax.random.key(3), counts, out_len))
    masked = out == 0
    # Each item is masked with probability k / n; the count is hypergeometric(n, k, out_len).
    np.testing.assert_allclose(masked.mean(0), k / n, atol=0.015)
    hyper_var = out_len * (k / n) * (1 - k / n) * (n - out_len) / (n - 1)
    np.testing.assert_allclose(masked.sum(1).var(), hyper_var, rtol=0.06)
    # A window covering the whole sequence masks exactly int(0.7 * n) items.
    whole = np.asarray(augment._mask_suffix(jnp.asarray(x[:50]), jax.random.key(4), counts, 32))
    np.testing.assert_array_equal((whole[:, 32 - n :] == 0).sum(1), k)
    np.testing.assert_array_equal(whole[:, : 32 - n], 0)


def test_crop_and_reorder_suffix_rules():
    lengths = [0, 1, 3, 10, 12]
    x = _batch(lengths)
    counts_crop = augment._count_table(0.2, W)
    counts_re = augment._count_table(0.2, W)
    for seed in range(20):
        k = jax.random.key(seed)
        full_crop = np.asarray(augment._crop_suffix(jnp.asarray(x), k, counts_crop, W))
        part_crop = np.asarray(augment._crop_suffix(jnp.asarray(x), k, counts_crop, 4))
        np.testing.assert_array_equal(part_crop, full_crop[:, -4:])  # same draws, last columns
        full_re = np.asarray(augment._reorder_suffix(jnp.asarray(x), k, counts_re, 3, W))
        part_re = np.asarray(augment._reorder_suffix(jnp.asarray(x), k, counts_re, 3, 5))
        np.testing.assert_array_equal(part_re, full_re[:, -5:])
        for r, n in enumerate(lengths):
            got = _real(full_crop[r])
            assert len(got) == (0 if n == 0 else max(int(0.2 * n), 1))
            if n:
                seq = list(_real(x[r]))
                start = seq.index(got[0])
                assert list(got) == seq[start : start + len(got)]
                assert start <= n - int(0.2 * n) - 1
            np.testing.assert_array_equal(np.sort(full_re[r]), np.sort(x[r]))
            diff = np.nonzero(full_re[r] != x[r])[0]
            if len(diff):
                assert diff.max() - diff.min() < int(0.2 * n)


def test_random_augment_suffix_is_deterministic_and_checks_length():
    x = _batch([0, 5, 12])
    a = augment.random_augment_suffix(jax.random.key(5), x, 6)
    np.testing.assert_array_equal(a, augment.random_augment_suffix(jax.random.key(5), x, 6))
    np.testing.assert_array_equal(np.asarray(a)[0], 0)
    with pytest.raises(ValueError, match="out_len"):
        augment.random_augment_suffix(jax.random.key(5), x, W + 1)
