"""Tests for latentcrs_jax.evaluation.ranking: hand-computed HIT/NDCG cases and edge cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.evaluation import ranking


def _means(sums):
    return {k: float(s) / float(c) for k, (s, c) in jax.device_get(sums).items()}


def _ndcg(rank):
    return 1.0 / math.log2(rank + 2)


def test_hand_computed_ranks():
    # 6 ids (0 = PAD). Row 0: target 3 is best -> rank 0. Row 1: target 1 has two better items.
    scores = jnp.array(
        [
            [9.0, 0.1, 0.2, 0.9, 0.3, 0.0],
            [9.0, 0.5, 0.9, 0.1, 0.8, 0.0],
        ]
    )
    sums = ranking.full_ranking_metrics(scores, jnp.array([3, 1]), ks=(1, 2, 3, 5))
    m = _means(sums)
    # PAD has the highest raw score but is never ranked.
    assert m["hit@1"] == pytest.approx(0.5)
    assert m["hit@2"] == pytest.approx(0.5)
    assert m["hit@3"] == pytest.approx(1.0)
    assert m["ndcg@3"] == pytest.approx((_ndcg(0) + _ndcg(2)) / 2)
    assert m["ndcg@2"] == pytest.approx(0.5)


def test_pad_never_ranked_even_if_target_is_pad():
    scores = jnp.array([[100.0, 1.0, 2.0]])
    top_scores, top_ids = jax.lax.top_k(ranking.mask_scores(scores), 3)
    assert int(top_ids[0, 0]) == 2 and int(top_ids[0, 1]) == 1
    assert np.isneginf(float(top_scores[0, 2]))
    m = _means(ranking.full_ranking_metrics(scores, jnp.array([0]), ks=(1, 2, 3)))
    assert m["hit@3"] == 0.0 and m["ndcg@3"] == 0.0


def test_ties_lower_id_first():
    # Items 1..4 all tie; rank of target t is t-1 under the documented rule.
    scores = jnp.array([[0.0, 1.0, 1.0, 1.0, 1.0]] * 4)
    target = jnp.array([1, 2, 3, 4])
    m = _means(ranking.full_ranking_metrics(scores, target, ks=(1, 2, 3, 4)))
    assert m["hit@1"] == pytest.approx(0.25)
    assert m["hit@2"] == pytest.approx(0.5)
    assert m["ndcg@4"] == pytest.approx(sum(_ndcg(r) for r in range(4)) / 4)


def test_target_in_history_is_a_miss_when_masked_and_history_switch():
    scores = jnp.array([[0.0, 5.0, 4.0, 3.0, 2.0]])
    exclude = jnp.array([[0, 1, 3]])  # left-padded history
    masked = _means(ranking.full_ranking_metrics(scores, jnp.array([3]), exclude, ks=(1, 2, 4)))
    assert masked["hit@4"] == 0.0
    # Target 4 moves up two places once 1 and 3 are masked.
    m4 = _means(ranking.full_ranking_metrics(scores, jnp.array([4]), exclude, ks=(1, 2, 4)))
    assert m4["hit@2"] == 1.0 and m4["ndcg@2"] == pytest.approx(_ndcg(1))
    unmasked = _means(
        ranking.full_ranking_metrics(
            scores, jnp.array([3]), exclude, ks=(1, 2, 4), mask_history=False
        )
    )
    assert unmasked["hit@2"] == 0.0 and unmasked["hit@4"] == 1.0
    assert unmasked["ndcg@4"] == pytest.approx(_ndcg(2))


def test_padding_rows_change_nothing():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 30)).astype(np.float32)
    target = rng.integers(1, 30, size=5).astype(np.int32)
    hist = rng.integers(0, 30, size=(5, 4)).astype(np.int32)
    base = _means(ranking.full_ranking_metrics(scores, target, hist))
    pad_scores = np.concatenate([scores, rng.normal(size=(3, 30)).astype(np.float32)])
    pad_target = np.concatenate([target, np.array([1, 2, 3], np.int32)])
    pad_hist = np.concatenate([hist, np.zeros((3, 4), np.int32)])
    valid = np.array([True] * 5 + [False] * 3)
    padded = ranking.full_ranking_metrics(pad_scores, pad_target, pad_hist, valid)
    assert _means(padded) == pytest.approx(base)
    assert float(padded["hit@5"][1]) == 5.0


def test_all_padding_batch_counts_zero():
    sums = ranking.full_ranking_metrics(
        jnp.ones((2, 30)), jnp.array([1, 2]), valid=jnp.array([False, False])
    )
    assert all(float(c) == 0.0 and float(s) == 0.0 for s, c in sums.values())
    acc = ranking.MetricAccumulator()
    acc.add(sums)
    assert math.isnan(acc.result()["hit@5"])


def test_ks_larger_than_list_is_an_error():
    with pytest.raises(ValueError, match="needs 20"):
        ranking.metrics_from_top_k(
            jnp.zeros((1, 5), jnp.int32), jnp.zeros((1, 5)), jnp.array([1]), ks=(5, 20)
        )


@pytest.mark.parametrize("chunk_size", [3, 7, 64])
def test_chunked_matches_full(chunk_size):
    rng = np.random.default_rng(1)
    n_ids, b, d = 23, 6, 4
    queries = rng.normal(size=(b, d)).astype(np.float32)
    table = rng.normal(size=(n_ids, d)).astype(np.float32)
    table[5] = table[7]  # force an exact tie between ids 5 and 7
    queries[0] = 0.0  # all-tie row
    hist = rng.integers(0, n_ids, size=(b, 5)).astype(np.int32)
    full = ranking.mask_scores(jnp.asarray(queries @ table.T), hist)
    want_scores, want_ids = jax.lax.top_k(full, 20)
    got_scores, got_ids = ranking.chunked_top_k(
        ranking.dot_product_chunk_fn(jnp.asarray(queries), jnp.asarray(table)),
        n_ids,
        b,
        hist,
        k=20,
        chunk_size=chunk_size,
    )
    # The reference is numpy's float32 matmul and the chunks are XLA's: the two may round a
    # 4-term dot product differently (seen on an AVX2 CPU: 2.7e-8 apart at a score of -0.014),
    # so the tolerance is absolute; a chunking error would be of the order of the scores (~1).
    np.testing.assert_allclose(np.asarray(got_scores), np.asarray(want_scores), rtol=0, atol=1e-5)
    finite = np.isfinite(np.asarray(want_scores))  # ids behind -inf scores are arbitrary
    assert (~finite).any()  # the history mask leaves fewer than 20 finite entries in some rows
    np.testing.assert_array_equal(np.asarray(got_ids)[finite], np.asarray(want_ids)[finite])


def test_padded_batches_and_evaluate_are_batch_size_invariant():
    rng = np.random.default_rng(2)
    arrays = {
        "scores": rng.normal(size=(11, 40)).astype(np.float32),
        "target": rng.integers(1, 40, size=11).astype(np.int32),
        "exclude": rng.integers(0, 40, size=(11, 6)).astype(np.int32),
    }
    step = jax.jit(
        lambda b: ranking.full_ranking_metrics(b["scores"], b["target"], b["exclude"], b["valid"])
    )
    results = [ranking.evaluate(step, ranking.padded_batches(arrays, bs)) for bs in (1, 4, 11, 16)]
    for r in results[1:]:
        assert r == pytest.approx(results[0], abs=1e-7)
    batches = list(ranking.padded_batches(arrays, 4))
    assert [int(b["valid"].sum()) for b in batches] == [4, 4, 3]
    assert all(b["scores"].shape == (4, 40) for b in batches)


def test_padded_batches_rejects_misaligned_arrays():
    with pytest.raises(ValueError, match="different lengths"):
        list(ranking.padded_batches({"a": np.zeros(3), "b": np.zeros(4)}, 2))


def _top_k_rank(masked: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rank `lax.top_k` gives the target (N+1 where it is not in the finite list)."""
    n = masked.shape[1]
    top_scores, top_ids = jax.lax.top_k(jnp.asarray(masked), n)
    found = (np.asarray(top_ids) == target[:, None]) & np.isfinite(np.asarray(top_scores))
    return np.where(found.any(1), found.argmax(1), n)


def test_counted_rank_equals_top_k_position_with_ties_and_masks():
    rng = np.random.default_rng(3)
    b, n_ids = 64, 40
    # Scores on a coarse grid: many exact ties; some rows entirely tied.
    scores = rng.integers(0, 5, size=(b, n_ids)).astype(np.float32)
    scores[:4] = 1.0
    target = rng.integers(0, n_ids, size=b).astype(np.int32)  # includes PAD (0) as a target
    hist = rng.integers(0, n_ids, size=(b, 6)).astype(np.int32)
    masked = np.asarray(ranking.mask_scores(jnp.asarray(scores), hist))
    got = np.asarray(ranking.target_rank(jnp.asarray(masked), jnp.asarray(target)))
    want = _top_k_rank(masked, target)
    np.testing.assert_array_equal(got, want)
    # Closed form, row by row, with numpy.
    for i in range(b):
        s_t = masked[i, target[i]]
        expect = (
            n_ids
            if not np.isfinite(s_t)
            else int((masked[i] > s_t).sum() + (masked[i, : target[i]] == s_t).sum())
        )
        assert got[i] == expect
    assert (got == n_ids).any() and (got == 0).any()  # misses and first places both occur


def test_full_ranking_metrics_equal_the_top_k_route():
    rng = np.random.default_rng(4)
    scores = np.round(rng.normal(size=(50, 300)), 1).astype(np.float32)  # ties
    target = rng.integers(1, 300, size=50).astype(np.int32)
    hist = rng.integers(0, 300, size=(50, 12)).astype(np.int32)
    valid = rng.random(50) < 0.8
    got = jax.device_get(ranking.full_ranking_metrics(scores, target, hist, valid))
    top_scores, top_ids = jax.lax.top_k(ranking.mask_scores(jnp.asarray(scores), hist), 20)
    want = jax.device_get(ranking.metrics_from_top_k(top_ids, top_scores, target, valid))
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == want[k], k
