"""Per-epoch K-means over sequence embeddings, and the final intent matrix.

ICLRec clusters with faiss (`rec_models.py:KMeans`): niter 20, nredo 5, seed 1, random
initial centroids drawn from the points, at most 4096 training points per centroid, L2 index.
We use scikit-learn's Lloyd K-means with the same knobs (`init="random"`, `n_init=nredo`,
`max_iter=niter`, `tol=0`, `random_state=seed`, and the same subsampling rule), because:
* the points are few and small (one 64-d vector per training sequence: 6k for ML-1M, ~100k for
  CDs), so one fit takes ~1.5 s for ML-1M at K=512 on 2 cores, small next to an epoch;
* it keeps the best of `nredo` restarts by inertia and relocates empty clusters, which a short
  jitted Lloyd's loop would have to re-implement (faiss splits large clusters instead);
* the result is deterministic for a seed.
k-means++ initialisation would be 20x slower here (28 s at K=512) for no benefit to faiss
parity, so it is not used. Assignment inside the jitted train step is `assign` (nearest
centroid in L2 against the un-normalised centroids), as the authors' faiss index does.

The intent vectors handed to the EM stage are the L2-normalised centroids (`intent_matrix`).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans


@dataclasses.dataclass(frozen=True)
class KMeansConfig:
    """faiss-equivalent K-means settings.

    Attributes:
      num_clusters: K.
      num_iters: Lloyd iterations per restart (faiss niter).
      num_redo: restarts; the lowest inertia wins (faiss nredo).
      seed: random seed (ICLRec: args.seed = 1).
      max_points_per_centroid: train on at most K * this many random points (faiss default).
    """

    num_clusters: int
    num_iters: int = 20
    num_redo: int = 5
    seed: int = 1
    max_points_per_centroid: int = 4096


@dataclasses.dataclass(frozen=True)
class KMeansResult:
    """A fitted clustering.

    Attributes:
      centroids: float32[K, D] raw (un-normalised) centroids.
      assignments: int32[N] nearest centroid of every input point.
      inertia: sum of squared distances of the training points to their centroids.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    inertia: float


def fit(points: np.ndarray, cfg: KMeansConfig) -> KMeansResult:
    """Clusters points with faiss-like settings.

    Args:
      points: float32[N, D] sequence embeddings (N >= K).
      cfg: settings.

    Returns:
      The centroids, the assignment of every point and the inertia.
    """
    points = np.asarray(points, dtype=np.float32)
    n, k = points.shape[0], cfg.num_clusters
    if points.ndim != 2:
        raise ValueError(f"points must be [N, D], got shape {points.shape}")
    if n < k:
        raise ValueError(f"K-means needs at least K={k} points, got {n}; lower num_intents")
    if not np.all(np.isfinite(points)):
        raise ValueError("K-means input contains NaN or inf")
    train = points
    cap = k * cfg.max_points_per_centroid
    if n > cap:
        idx = np.random.default_rng(cfg.seed).choice(n, size=cap, replace=False)
        train = points[np.sort(idx)]
    km = KMeans(
        n_clusters=k,
        init="random",
        n_init=cfg.num_redo,
        max_iter=cfg.num_iters,
        tol=0.0,
        random_state=cfg.seed,
    ).fit(train)
    centroids = km.cluster_centers_.astype(np.float32)
    assignments = np.asarray(assign(jnp.asarray(points), jnp.asarray(centroids)), np.int32)
    return KMeansResult(centroids, assignments, float(km.inertia_))


def assign(points: jax.Array, centroids: jax.Array) -> jax.Array:
    """Nearest centroid in L2 (jittable; ties to the lower index).

    Args:
      points: float32[N, D].
      centroids: float32[K, D] (un-normalised).

    Returns:
      int32[N] cluster ids.
    """
    d2 = (
        jnp.sum(points * points, -1, keepdims=True)
        - 2.0 * points @ centroids.T
        + jnp.sum(centroids * centroids, -1)[None, :]
    )
    return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def intent_matrix(centroids: np.ndarray | jax.Array) -> np.ndarray:
    """The K intent vectors: L2-normalised centroids (torch `F.normalize`, eps 1e-12).

    Args:
      centroids: float32[K, D].

    Returns:
      float32[K, D] rows of unit norm.
    """
    c = np.asarray(centroids, dtype=np.float32)
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
