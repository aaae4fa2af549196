"""Tests of leave-one-out windows, segmentation augmentation and negatives."""

import random

import numpy as np
import pytest

from latentcrs_jax.data import negatives, splits
from latentcrs_jax.data.errors import DataError


def _unpad(row):
    return row[row > 0].tolist()


def test_leave_one_out_windows():
    seq = np.arange(1, 31, dtype=np.int32)  # 30 items
    out = splits.build_splits([seq], max_window=25, augment_seeds=())
    train, valid, test = out["train"], out["valid"], out["test"]
    # train: S[:-2][-25:] = items 4..28 -> history 4..27, target 28 (= S[-3]).
    assert _unpad(train.history[0]) == list(range(4, 28)) and train.target[0] == 28
    assert _unpad(valid.history[0]) == list(range(5, 29)) and valid.target[0] == 29
    assert _unpad(test.history[0]) == list(range(6, 30)) and test.target[0] == 30
    assert train.history.shape == (1, 24) and train.source[0] == 0


def test_short_sequence_is_left_padded():
    out = splits.build_splits([np.array([7, 8, 9, 10, 11], np.int32)], 25, ())
    assert out["train"].history[0].tolist() == [0] * 22 + [7, 8]
    assert out["train"].target[0] == 9
    assert out["test"].history[0].tolist() == [0] * 20 + [7, 8, 9, 10]


@pytest.mark.parametrize("length", [10, 11, 40, 80])
def test_augmentation_follows_python_random(length):
    seq = np.arange(1, length + 1, dtype=np.int32)
    seeds = (1755, 2097)
    out = splits.build_splits([seq, seq], 25, seeds)
    train = out["train"]
    prefix = seq[:-2]
    if len(prefix) < 25 / 3:  # len(R) <= 8 is skipped
        assert len(train) == 2
        return
    assert len(train) == 2 + 2 * len(seeds)
    k = 2
    for j, seed in enumerate(seeds, 1):
        rng = random.Random(seed)
        for _user in range(2):
            r = rng.randint(4, len(prefix) - 4)
            assert train.source[k] == j
            assert train.target[k] == prefix[r - 1]
            hist = _unpad(train.history[k])
            expected = prefix[max(0, r - 25) : r - 1].tolist()
            assert hist == expected
            k += 1


def test_augmentation_skips_users_with_at_most_eight_training_items():
    out = splits.build_splits([np.arange(1, 11), np.arange(1, 12)], 25, (1755,))
    # len(R) = 8 is skipped, len(R) = 9 qualifies.
    assert out["train"].user.tolist() == [0, 1, 1]


def _negatives_inputs():
    seqs = [np.array([1, 2, 3, 4, 5, 6], np.int32), np.array([7, 8, 9, 10, 11], np.int32)]
    hist = np.array([[0, 1, 2, 3], [0, 0, 7, 8]], np.int32)
    return seqs, np.array([0, 1], np.int32), hist, np.array([4, 9], np.int32)


def test_negatives_exclude_the_whole_sequence_and_are_reproducible():
    seqs, users, hist, tgt = _negatives_inputs()
    a = negatives.sample_negatives(users, hist, tgt, seqs, 30, 10, seed=3)
    b = negatives.sample_negatives(users, hist, tgt, seqs, 30, 10, seed=3)
    np.testing.assert_array_equal(a, b)
    for row, seq in zip(a, seqs):
        assert len(set(row.tolist())) == 10
        assert not set(row.tolist()) & set(seq.tolist())
        assert row.min() >= 1 and row.max() <= 30


def test_faithful_negatives_may_include_future_items():
    seqs, users, hist, tgt = _negatives_inputs()
    seen_future = False
    for seed in range(30):
        neg = negatives.sample_negatives(users, hist, tgt, seqs, 14, 8, seed, faithful=True)
        for row, h, t in zip(neg, hist, tgt):
            assert not set(row.tolist()) & (set(_unpad(h)) | {int(t)})
        seen_future |= bool({5, 6} & set(neg[0].tolist()))
    assert seen_future


def test_negatives_error_when_too_few_candidates():
    seqs, users, hist, tgt = _negatives_inputs()
    with pytest.raises(DataError, match="only 5 candidate negatives"):
        negatives.sample_negatives(users, hist, tgt, seqs, 11, 10, seed=0)
