"""Full-ranking evaluation: HIT@K and NDCG@K over every item id, shared by every stage.

Every stage (backbone pretraining, the EM heads, multi-turn evaluation) scores all item ids
`0..N` for a batch of users and asks where the one target lands. This module turns scores into
metric sums:

* PAD (id 0) is never ranked: its score is set to -inf.
* History items are masked (score -inf) by default; `mask_history=False` ranks them too.
* Rows can be padding (`valid=False`): they add nothing to sums or counts, so the batch size
  and the padding of the last batch never change a number.
* Scores in one piece (`full_ranking_metrics`) give the target's rank by counting the items
  ahead of it: one compare and sum per row, 1.7 ms against `jax.lax.top_k`'s 5.9 ms for
  480 x 3,534 scores on a 2-core AMD EPYC (Zen 4). Item-chunked scoring keeps a running
  `jax.lax.top_k` with K = max(ks).
* Metrics are returned as `(sum, count)` pairs, summed over batches on the host and divided once.

Tie rule: among items with the same score the lower item id ranks higher, so the target's 0-based
rank is `#{j : s_j > s_t} + #{j < t : s_j == s_t}` over unmasked ids. `jax.lax.top_k` puts the
lower index first among equal values, so the item-chunked path keeps the same rule (earlier
chunks hold lower ids and come first in every merge).

A target whose score is -inf (it is PAD, or it is in the masked history) is a miss at every K.

Two ways to score:
* `full_ranking_metrics(scores, ...)`: the caller computes `float32[B, N+1]` scores in one go
  (B x (N+1) floats must fit; fine for N up to a few hundred thousand at B = 256).
* `chunked_top_k(score_chunk_fn, ...)`: scores are produced `chunk_size` items at a time inside a
  `lax.scan` that keeps a running top-K, so memory is O(B x chunk_size) whatever N is.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_KS = (5, 10, 15, 20)

Sums = dict[str, tuple[jax.Array, jax.Array]]


def mask_scores(
    scores: jax.Array, exclude: jax.Array | None = None, *, mask_history: bool = True
) -> jax.Array:
    """Sets the PAD column and (optionally) every excluded item to -inf.

    Args:
      scores: float32[B, N+1] scores over item ids 0..N (column 0 is PAD).
      exclude: int32[B, H] item ids to mask per row (e.g. the user's history); 0 entries are
        padding and harmless (PAD is masked anyway). Ignored when `mask_history` is False.
      mask_history: whether to mask `exclude`.

    Returns:
      float32[B, N+1] masked scores.
    """
    scores = jnp.asarray(scores).at[:, 0].set(-jnp.inf)
    if mask_history and exclude is not None:
        rows = jnp.arange(scores.shape[0])[:, None]
        scores = scores.at[rows, exclude].set(-jnp.inf, mode="drop")
    return scores


def metrics_from_top_k(
    top_ids: jax.Array,
    top_scores: jax.Array,
    target: jax.Array,
    valid: jax.Array | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> Sums:
    """HIT@K and NDCG@K sums from a ranked top list.

    Args:
      top_ids: int32[B, Kmax] item ids, best first (Kmax >= max(ks)).
      top_scores: float32[B, Kmax] their (masked) scores; -inf entries never count as hits.
      target: int32[B] the one relevant item per row.
      valid: bool[B] rows to count; None counts every row.
      ks: cut-offs.

    Returns:
      {"hit@K": (sum, count), "ndcg@K": (sum, count)} for every K, float32 scalars.
    """
    kmax = top_ids.shape[1]
    if max(ks) > kmax:
        raise ValueError(f"top list has {kmax} entries but ks={ks} needs {max(ks)}")
    target = jnp.asarray(target)
    found = (top_ids == target[:, None]) & jnp.isfinite(top_scores)  # [B, Kmax]
    rank = jnp.where(found.any(axis=1), jnp.argmax(found, axis=1), kmax)  # [B]; kmax = miss
    return metrics_from_rank(rank, valid, ks)


def metrics_from_rank(
    rank: jax.Array, valid: jax.Array | None = None, ks: tuple[int, ...] = DEFAULT_KS
) -> Sums:
    """HIT@K and NDCG@K sums from each row's 0-based target rank int32[B] (a miss: any rank
    >= max(ks)); `valid` and the result as `metrics_from_top_k`."""
    valid = jnp.ones(rank.shape, dtype=bool) if valid is None else jnp.asarray(valid)
    count = valid.astype(jnp.float32).sum()
    gain = 1.0 / jnp.log2(rank.astype(jnp.float32) + 2.0)
    out: Sums = {}
    for k in ks:
        in_k = (rank < k) & valid
        out[f"hit@{k}"] = (in_k.astype(jnp.float32).sum(), count)
        out[f"ndcg@{k}"] = (jnp.where(in_k, gain, 0.0).sum(), count)
    return out


def target_rank(masked: jax.Array, target: jax.Array) -> jax.Array:
    """The target's 0-based rank under the tie rule (lower id first among equal scores).

    Args:
      masked: float32[B, N+1] scores, PAD and excluded items at -inf.
      target: int32[B] target ids.

    Returns:
      int32[B]: #{j : s_j > s_t} + #{j < t : s_j == s_t}, or N+1 (a miss at every cut-off)
      where the target's own score is not finite. NaN scores elsewhere never rank ahead.
    """
    target = jnp.asarray(target)
    s_t = jnp.take_along_axis(masked, target[:, None], axis=1)  # [B, 1]
    ids = jnp.arange(masked.shape[1])[None, :]
    ahead = (masked > s_t) | ((masked == s_t) & (ids < target[:, None]))
    rank = ahead.sum(axis=1, dtype=jnp.int32)
    return jnp.where(jnp.isfinite(s_t[:, 0]), rank, masked.shape[1])


def full_ranking_metrics(
    scores: jax.Array,
    target: jax.Array,
    exclude: jax.Array | None = None,
    valid: jax.Array | None = None,
    *,
    ks: tuple[int, ...] = DEFAULT_KS,
    mask_history: bool = True,
) -> Sums:
    """Masks, ranks the target among all items (`target_rank`) and returns HIT/NDCG sums.

    Args:
      scores: float32[B, N+1] scores over all item ids incl. PAD 0.
      target: int32[B] target item ids.
      exclude: int32[B, H] ids to mask (history), 0-padded; None masks only PAD.
      valid: bool[B] real rows (False for batch padding); None = all real.
      ks: cut-offs.
      mask_history: mask `exclude` (default) or rank history items too.

    Returns:
      {"hit@K"/"ndcg@K": (sum, count)} float32 scalars.
    """
    masked = mask_scores(jnp.asarray(scores, jnp.float32), exclude, mask_history=mask_history)
    return metrics_from_rank(target_rank(masked, target), valid, ks)


def chunked_top_k(
    score_chunk_fn: Callable[[jax.Array], jax.Array],
    num_ids: int,
    batch_size: int,
    exclude: jax.Array | None = None,
    *,
    k: int = max(DEFAULT_KS),
    chunk_size: int = 4096,
    mask_history: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Top-k over all item ids, scoring `chunk_size` ids at a time (bounded memory).

    Args:
      score_chunk_fn: maps int32[C] item ids to float32[B, C] scores (C = chunk_size; ids past
        the end arrive as 0 and are masked afterwards).
      num_ids: N+1, the number of item ids incl. PAD.
      batch_size: B.
      exclude: int32[B, H] ids to mask, 0-padded.
      k: length of the returned list.
      chunk_size: ids scored per step.
      mask_history: mask `exclude`.

    Returns:
      (top_scores float32[B, k], top_ids int32[B, k]), best first, ties to the lower id.
    """
    num_chunks = -(-num_ids // chunk_size)
    starts = jnp.arange(num_chunks, dtype=jnp.int32) * chunk_size
    rows = jnp.arange(batch_size)[:, None]

    def body(carry, start):
        best_scores, best_ids = carry
        ids = start + jnp.arange(chunk_size, dtype=jnp.int32)  # [C]
        in_range = ids < num_ids
        scores = score_chunk_fn(jnp.where(in_range, ids, 0)).astype(jnp.float32)  # [B, C]
        scores = jnp.where((in_range & (ids != 0))[None, :], scores, -jnp.inf)
        if mask_history and exclude is not None:
            local = exclude - start
            local = jnp.where((local >= 0) & (local < chunk_size), local, chunk_size)
            scores = scores.at[rows, local].set(-jnp.inf, mode="drop")
        cat_scores = jnp.concatenate([best_scores, scores], axis=1)
        cat_ids = jnp.concatenate([best_ids, jnp.broadcast_to(ids, scores.shape)], axis=1)
        new_scores, pos = jax.lax.top_k(cat_scores, k)
        return (new_scores, jnp.take_along_axis(cat_ids, pos, axis=1)), None

    init = (
        jnp.full((batch_size, k), -jnp.inf, jnp.float32),
        jnp.full((batch_size, k), -1, jnp.int32),
    )
    (top_scores, top_ids), _ = jax.lax.scan(body, init, starts)
    return top_scores, top_ids


def dot_product_chunk_fn(
    queries: jax.Array, item_table: jax.Array
) -> Callable[[jax.Array], jax.Array]:
    """Score function for `chunked_top_k` when score(b, y) = queries[b] . item_table[y].

    Args:
      queries: float32[B, D] user states.
      item_table: float32[N+1, D] item embeddings (row 0 = PAD).

    Returns:
      A function int32[C] -> float32[B, C].
    """
    return lambda ids: queries @ jnp.take(item_table, ids, axis=0).T


# ----------------------------------------------------------------------------------------------
# Host side: padded batches and (sum, count) accumulation.
# ----------------------------------------------------------------------------------------------


def padded_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Splits row-aligned arrays into fixed-size batches; the last one is zero-padded.

    Every batch has the same shapes (no recompiles) and a `valid: bool[batch_size]` entry that is
    False on padding rows.

    Args:
      arrays: name -> array with the same leading dimension S.
      batch_size: rows per batch.

    Yields:
      name -> array[batch_size, ...] plus "valid".
    """
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"arrays have different lengths: { {k: len(v) for k, v in arrays.items()} }"
        )
    (n,) = sizes
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = {}
        for name, value in arrays.items():
            chunk = value[start:stop]
            if stop - start < batch_size:
                pad = np.zeros((batch_size - (stop - start),) + value.shape[1:], value.dtype)
                chunk = np.concatenate([chunk, pad])
            batch[name] = chunk
        valid = np.zeros(batch_size, dtype=bool)
        valid[: stop - start] = True
        batch["valid"] = valid
        yield batch


class MetricAccumulator:
    """Sums (sum, count) metric pairs across batches in float64 and divides once."""

    def __init__(self):
        self._sums: dict[str, list[float]] = {}

    def add(self, sums: Mapping[str, tuple]) -> None:
        """Adds one batch of host (or device) `(sum, count)` pairs."""
        for name, (s, c) in jax.device_get(dict(sums)).items():
            acc = self._sums.setdefault(name, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)

    def result(self) -> dict[str, float]:
        """Returns sum / count per metric (NaN for a metric that counted nothing)."""
        return {k: (s / c if c > 0 else float("nan")) for k, (s, c) in self._sums.items()}


def evaluate(
    eval_step: Callable[[dict], Sums],
    batches: Iterable[dict],
    place: Callable[[dict], dict] | None = None,
) -> dict[str, float]:
    """Runs a (jitted) eval step over batches and returns the metric means.

    Device results are collected and fetched once at the end, so the loop never waits on the
    device per batch.

    Args:
      eval_step: batch -> {"name": (sum, count)}.
      batches: host batches (e.g. from `padded_batches`).
      place: optional host -> device placement (e.g. sharding.place_batch).

    Returns:
      name -> mean over all valid rows.
    """
    pending = [eval_step(place(b) if place else b) for b in batches]
    acc = MetricAccumulator()
    for sums in jax.device_get(pending):
        acc.add(sums)
    return acc.result()
