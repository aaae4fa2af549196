"""Tests for latentcrs_jax.training.kmeans: recovery, determinism, normalisation, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.training import kmeans


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]], np.float32)
    labels = rng.integers(0, 3, size=90)
    return (centers[labels] + rng.normal(scale=0.1, size=(90, 2))).astype(np.float32), labels


def test_recovers_separated_blobs():
    x, labels = _blobs()
    res = kmeans.fit(x, kmeans.KMeansConfig(num_clusters=3, seed=1))
    assert res.centroids.shape == (3, 2) and res.assignments.dtype == np.int32
    # Same partition as the ground truth, up to a relabelling.
    pairs = set(zip(labels.tolist(), res.assignments.tolist()))
    assert len(pairs) == 3
    assert res.inertia < 90 * 2 * 0.1**2 * 2


def test_deterministic_for_a_seed():
    x = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
    cfg = kmeans.KMeansConfig(num_clusters=16, seed=1)
    a, b = kmeans.fit(x, cfg), kmeans.fit(x, cfg)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_array_equal(a.assignments, b.assignments)


def test_subsampling_rule_still_assigns_every_point():
    x = np.random.default_rng(2).normal(size=(50, 3)).astype(np.float32)
    res = kmeans.fit(x, kmeans.KMeansConfig(num_clusters=2, max_points_per_centroid=5))
    assert res.assignments.shape == (50,)
    np.testing.assert_array_equal(res.assignments, kmeans.assign(x, res.centroids))


def test_assign_is_nearest_l2():
    pts = jnp.array([[0.0, 0.0], [5.0, 5.0], [1.0, 0.2]])
    cents = jnp.array([[1.0, 0.0], [4.0, 4.0]])
    np.testing.assert_array_equal(kmeans.assign(pts, cents), [0, 1, 0])


def test_intent_matrix_unit_rows():
    c = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], np.float32)
    m = kmeans.intent_matrix(c)
    np.testing.assert_allclose(m, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])


def test_errors():
    with pytest.raises(ValueError, match="at least K=5"):
        kmeans.fit(np.zeros((3, 2), np.float32), kmeans.KMeansConfig(num_clusters=5))
    with pytest.raises(ValueError, match="NaN"):
        kmeans.fit(np.full((6, 2), np.nan, np.float32), kmeans.KMeansConfig(num_clusters=2))
