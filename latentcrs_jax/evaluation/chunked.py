"""Item-chunked ranking for the evaluations that rank whole catalogues outside training.

A recommender that can score any subset of item ids exposes a `ChunkedScorer`:
`prepare(histories, texts)` turns a batch of rows into device inputs (user vectors, text
embeddings, per-row statistics), and `scores(inputs, ids)` gives float32[B, C] scores of the
ids int32[C] (ids=None: every id 0..N, the unchunked path). `top_k` then keeps a running
`lax.top_k` over `chunk_size` items at a time (`ranking.chunked_top_k`), so a batch never
holds B x (N+1) scores. `moments` gives each row's mean and standard deviation over items
1..N the same way (late fusion's z-scores).

Equal to the unchunked ranking: same masking (PAD, the history unless `mask_history` is
False), same tie rule (the lower id first), non-finite scores never ranked.
"""

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from latentcrs_jax.evaluation import ranking


@dataclasses.dataclass(eq=False)
class ChunkedScorer:
    """Scores of any item ids for a batch of (history, text) rows.

    Attributes:
      prepare: (histories int32[B, H], texts list[str], chunk_size) -> inputs, a pytree of
        device arrays (`chunk_size` for statistics over the catalogue, e.g. `moments`).
      scores: (inputs, ids int32[C] or None) -> float32[B, C] (None: float32[B, N+1]);
        jittable.
      num_ids: N+1, item ids including PAD.
    """

    prepare: Callable[[np.ndarray, Sequence[str], int], Any]
    scores: Callable[[Any, jax.Array | None], jax.Array]
    num_ids: int

    @functools.cached_property
    def _top_k(self):
        @functools.partial(jax.jit, static_argnames=("k", "chunk_size", "mask_history"))
        def run(inputs, history, *, k, chunk_size, mask_history):
            def chunk_fn(ids):
                s = self.scores(inputs, ids).astype(jnp.float32)
                return jnp.where(jnp.isfinite(s), s, -jnp.inf)

            return ranking.chunked_top_k(
                chunk_fn,
                self.num_ids,
                history.shape[0],
                history,
                k=k,
                chunk_size=chunk_size,
                mask_history=mask_history,
            )

        return run

    def top_k(
        self, histories: np.ndarray, texts: Sequence[str], k: int, chunk_size: int, mask_history
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids int32[B, k], scores float32[B, k]) best first; -inf entries are not ranked."""
        inputs = self.prepare(histories, texts, int(chunk_size))
        return self.top_k_prepared(inputs, histories, k, chunk_size, mask_history)

    def top_k_prepared(
        self, inputs, histories: np.ndarray, k: int, chunk_size: int, mask_history
    ) -> tuple[np.ndarray, np.ndarray]:
        """`top_k` of inputs that `prepare` (or an equivalent) made."""
        scores, ids = self._top_k(
            inputs,
            jnp.asarray(histories, jnp.int32),
            k=int(k),
            chunk_size=int(chunk_size),
            mask_history=bool(mask_history),
        )
        return np.asarray(ids), np.asarray(scores)


def take(table: jax.Array, ids: jax.Array | None) -> jax.Array:
    """Rows `ids` of an item table [N+1, ...] (all rows when ids is None)."""
    return table if ids is None else jnp.take(table, ids, axis=0)


def ranked_lists(ids: np.ndarray, scores: np.ndarray) -> list[list[int]]:
    """The finite entries of each top-k row as id lists (`filter.rank_items`'s output)."""
    return [[int(i) for i, s in zip(r, sc) if np.isfinite(s)] for r, sc in zip(ids, scores)]


def moments(
    score_chunk_fn: Callable[[jax.Array], jax.Array],
    num_ids: int,
    batch_size: int,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Each row's mean and (population) standard deviation over item ids 1..N, chunk by chunk.

    Chunks are merged with Chan et al.'s pairwise update (each chunk's own mean and squared
    deviations, then the exact combination), as stable as a two-pass sum over the row.

    Args:
      score_chunk_fn: int32[C] ids -> float32[B, C] (ids past the end arrive as 0).
      num_ids: N+1.
      batch_size: B.
      chunk_size: C.

    Returns:
      (mean float32[B], std float32[B]).
    """
    starts = jnp.arange(-(-num_ids // chunk_size), dtype=jnp.int32) * chunk_size

    def body(carry, start):
        count, mean, m2 = carry
        ids = start + jnp.arange(chunk_size, dtype=jnp.int32)
        real = (ids < num_ids) & (ids != 0)
        s = score_chunk_fn(jnp.where(ids < num_ids, ids, 0)).astype(jnp.float32)
        n_c = real.sum().astype(jnp.float32)
        mean_c = jnp.where(real, s, 0.0).sum(1) / jnp.maximum(n_c, 1.0)
        m2_c = jnp.where(real, (s - mean_c[:, None]) ** 2, 0.0).sum(1)
        total = count + n_c
        delta = mean_c - mean
        mean = mean + delta * (n_c / jnp.maximum(total, 1.0))
        m2 = m2 + m2_c + delta**2 * (count * n_c / jnp.maximum(total, 1.0))
        return (total, mean, m2), None

    zeros = jnp.zeros(batch_size, jnp.float32)
    (count, mean, m2), _ = jax.lax.scan(body, (jnp.float32(0.0), zeros, zeros), starts)
    return mean, jnp.sqrt(m2 / jnp.maximum(count, 1.0))
