"""Late fusion: per-sample z-scores, the fused score and the validation weight fit."""

import numpy as np
import pytest

from latentcrs_jax.evaluation import late_fusion


def _np_zscore(s: np.ndarray) -> np.ndarray:
    items = s[:, 1:].astype(np.float64)
    z = (items - items.mean(1, keepdims=True)) / (items.std(1, keepdims=True) + 1e-6)
    return np.concatenate([np.zeros((len(s), 1)), z], axis=1)


def test_zscore_matches_numpy_and_ignores_pad():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 9)).astype(np.float32) * 3 + 5
    z = np.asarray(late_fusion.zscore(s))
    np.testing.assert_allclose(z, _np_zscore(s), atol=1e-5)
    np.testing.assert_allclose(z[:, 1:].mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, 1:].std(1), 1.0, atol=1e-4)
    # PAD's value plays no part: changing it changes nothing.
    s2 = s.copy()
    s2[:, 0] = 1e6
    np.testing.assert_allclose(np.asarray(late_fusion.zscore(s2)), z, atol=1e-6)


def test_zscore_of_a_constant_row_is_zero():
    z = np.asarray(late_fusion.zscore(np.full((2, 5), 3.0, np.float32)))
    np.testing.assert_array_equal(z, 0.0)


def test_fused_score_matches_numpy():
    rng = np.random.default_rng(1)
    b = rng.normal(size=(3, 11)).astype(np.float32)
    t = rng.normal(size=(3, 11)).astype(np.float32) * 0.1
    counts = rng.integers(0, 50, size=11)
    w = late_fusion.Weights(backbone=0.6, text=0.4, popularity=0.2)
    got = late_fusion.score(b, t, late_fusion.log_popularity(counts), w)
    zp = _np_zscore(np.log1p(counts.astype(np.float64))[None, :])
    want = 0.6 * _np_zscore(b) + 0.4 * _np_zscore(t) + 0.2 * zp
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fit_recovers_the_weight_that_generated_the_targets():
    # Each target is the arg-max of 0.7 z(b) + 0.3 z(t): only w_t = 0.3 ranks every one first.
    rng = np.random.default_rng(2)
    s, n = 300, 40
    b = rng.normal(size=(s, n + 1)).astype(np.float32)
    t = rng.normal(size=(s, n + 1)).astype(np.float32) * 0.2
    truth = 0.7 * _np_zscore(b) + 0.3 * _np_zscore(t)
    target = (1 + truth[:, 1:].argmax(1)).astype(np.int32)
    history = np.zeros((s, 3), np.int32)
    evaluate = late_fusion.split_evaluator(
        b, t, np.zeros(n + 1, np.float32), target, history, mask_history=True, batch_size=64
    )
    grid = late_fusion.candidates(text_grid=tuple(i / 10 for i in range(11)), pop_grid=(0.0,))
    best, value, trace = late_fusion.fit(lambda w: evaluate(w)["ndcg@10"], grid)
    assert best.text == pytest.approx(0.3) and best.backbone == pytest.approx(0.7)
    assert value == pytest.approx(1.0)
    others = [v for w, v in trace if w != best]
    assert len(others) == 10 and max(others) < 1.0
    # Text alone and backbone alone are both clearly worse.
    values = {round(w.text, 1): v for w, v in trace}
    assert values[0.0] < 0.9 and values[1.0] < 0.9


def test_history_masking_applies_to_the_fused_ranking():
    # Item 1 wins every score but is in the history: masked, the target (item 2) is first.
    b = np.zeros((1, 30), np.float32)
    b[0, 1:3] = (5.0, 4.0)
    t = b.copy()
    t[0, 4] = 1.0
    args = (b, t, np.zeros(30, np.float32), np.array([2], np.int32), np.array([[1]], np.int32))
    w = late_fusion.Weights(0.5, 0.5)
    masked = late_fusion.split_evaluator(*args, mask_history=True)(w)
    unmasked = late_fusion.split_evaluator(*args, mask_history=False)(w)
    assert masked["hit@5"] == 1.0 and masked["ndcg@5"] == pytest.approx(1.0)
    assert unmasked["ndcg@5"] == pytest.approx(1.0 / np.log2(3))


def test_fit_keeps_the_first_of_equal_scores_and_rejects_an_empty_grid():
    grid = late_fusion.candidates(text_grid=(0.0, 0.5, 1.0), pop_grid=(0.0, 0.1))
    assert grid[0] == late_fusion.Weights(1.0, 0.0, 0.0)
    best, value, _ = late_fusion.fit(lambda w: 1.0 if w.text >= 0.5 else 0.0, grid)
    assert best == late_fusion.Weights(0.5, 0.5, 0.0) and value == 1.0
    with pytest.raises(ValueError):
        late_fusion.fit(lambda w: 0.0, [])
