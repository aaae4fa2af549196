"""Losses of the sequential backbone (method.md section 2.2), as pure functions.

* `next_item_bce`: ICLRec's next-item loss (`Trainer.cross_entropy`), one sampled negative per
  position, averaged over non-pad positions.
* `full_softmax_ce`: cross-entropy over all real items at every non-pad position (SASRec-CE,
  the standard-protocol variant); PAD is excluded from the softmax.
* `info_nce`: ICLRec's `NCELoss` (SimCLR-style 2B x 2B InfoNCE, dot-product similarity).
* `intent_contrast`: ICLRec's `PCLoss` without de-noising: each view against its sequence's
  assigned centroid, with `info_nce`, averaged over the two views.

Every function takes an optional `valid: bool[B]` so padding rows of a fixed-size batch add
nothing (they are dropped from means and, in the contrastive losses, from the negatives).

Numerics: the authors write -log(sigmoid(x) + 1e-24); we use `jax.nn.log_sigmoid`, identical
except where sigmoid underflows (|x| > ~55), where theirs saturates at 55.3 and ours keeps the
exact gradient.
"""

import functools

import jax
import jax.numpy as jnp

# Masked logits use a large finite negative rather than -inf, so that even a batch whose rows
# are all padding gives finite gradients (exp underflows to exactly 0 either way).
_NEG = -1e30


def _mean_over(values: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(values * weights) / max(sum(weights), 1)."""
    weights = weights.astype(jnp.float32)
    return jnp.sum(jnp.where(weights > 0, values, 0.0) * weights) / jnp.maximum(weights.sum(), 1.0)


def next_item_bce(
    seq_out: jax.Array,
    item_table: jax.Array,
    pos_ids: jax.Array,
    neg_ids: jax.Array,
) -> jax.Array:
    """ICLRec next-item BCE: -log s(h.e_pos) - log(1 - s(h.e_neg)) over non-pad positions.

    Args:
      seq_out: float32[B, L, D] backbone outputs.
      item_table: float32[N+1, D] item embeddings.
      pos_ids: int32[B, L] next item at each position (0 = no target; padding rows are all 0).
      neg_ids: int32[B, L] one sampled negative per position.

    Returns:
      Scalar loss averaged over positions with pos_ids > 0 (0 if there are none).
    """
    pos_logits = jnp.sum(seq_out * jnp.take(item_table, pos_ids, axis=0), -1)
    neg_logits = jnp.sum(seq_out * jnp.take(item_table, neg_ids, axis=0), -1)
    per_pos = -jax.nn.log_sigmoid(pos_logits) - jax.nn.log_sigmoid(-neg_logits)
    return _mean_over(per_pos, pos_ids > 0)


def full_softmax_ce(
    seq_out: jax.Array, item_table: jax.Array, target_ids: jax.Array, chunk_size: int = 0
) -> jax.Array:
    """Softmax cross-entropy over all real items at every position with a target.

    Args:
      seq_out: float32[B, L, D] backbone outputs.
      item_table: float32[N+1, D] item embeddings (row 0 = PAD, excluded from the softmax).
      target_ids: int32[B, L] next item (0 = no target).
      chunk_size: 0 materialises the [B, L, N+1] logits; > 0 computes the loss and its
        gradient `chunk_size` positions at a time (`chunked_softmax_ce`), which never holds
        more than [chunk_size, N+1] logits and is ~3x faster on CPU (memory-bound otherwise).

    Returns:
      Scalar mean cross-entropy over positions with target_ids > 0 (0 if there are none).
    """
    if chunk_size:
        h = seq_out.reshape(-1, seq_out.shape[-1])
        tgt = target_ids.reshape(-1)
        w = (tgt > 0).astype(jnp.float32)
        return chunked_softmax_ce(h, item_table, tgt, w / jnp.maximum(w.sum(), 1.0), chunk_size)
    logits = jnp.einsum("bld,nd->bln", seq_out, item_table)
    logits = logits.at[..., 0].set(_NEG)
    lse = jax.nn.logsumexp(logits, axis=-1)
    tgt = jnp.take_along_axis(logits, target_ids[..., None], axis=-1)[..., 0]
    return _mean_over(lse - tgt, target_ids > 0)


def _position_chunks(h, tgt, w, chunk):
    pad = (-h.shape[0]) % chunk
    h = jnp.pad(h, ((0, pad), (0, 0)))
    tgt, w = jnp.pad(tgt, (0, pad)), jnp.pad(w, (0, pad))
    n = h.shape[0] // chunk
    return h.reshape(n, chunk, -1), tgt.reshape(n, chunk), w.reshape(n, chunk)


def _chunk_logits(h, table):
    return (h @ table.T).at[:, 0].set(_NEG)


def _chunked_ce_fwd(h, table, tgt, w, chunk):
    hc, tc, wc = _position_chunks(h, tgt, w, chunk)

    def body(_, xs):
        hh, tt, ww = xs
        logits = _chunk_logits(hh, table)
        lse = jax.nn.logsumexp(logits, -1)
        tl = jnp.take_along_axis(logits, tt[:, None], -1)[:, 0]
        return None, (jnp.sum(jnp.where(ww > 0, lse - tl, 0.0) * ww), lse)

    _, (losses, lses) = jax.lax.scan(body, None, (hc, tc, wc))
    return losses.sum(), (h, table, tgt, w, lses)


def _chunked_ce_bwd(chunk, res, g):
    h, table, tgt, w, lses = res
    hc, tc, wc = _position_chunks(h, tgt, w, chunk)

    def body(dtable, xs):
        hh, tt, ww, lse = xs
        p = jnp.exp(_chunk_logits(hh, table) - lse[:, None])
        p = p.at[jnp.arange(tt.shape[0]), tt].add(-1.0)
        p = p * (ww * g)[:, None]
        return dtable + p.T @ hh, p @ table

    dtable, dh = jax.lax.scan(body, jnp.zeros_like(table), (hc, tc, wc, lses))
    return dh.reshape(-1, h.shape[1])[: h.shape[0]], dtable, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_softmax_ce(
    h: jax.Array, table: jax.Array, target: jax.Array, weight: jax.Array, chunk: int
) -> jax.Array:
    """sum_t weight[t] * CE(h[t] . table^T, target[t]), PAD column excluded, in chunks.

    The backward pass recomputes each chunk's logits instead of storing them (one extra
    matmul, no [T, N+1] buffer).

    Args:
      h: float32[T, D] flattened positions.
      table: float32[N+1, D] item embeddings.
      target: int32[T] targets (anything where weight is 0).
      weight: float32[T] per-position weights (0 = ignored).
      chunk: positions per chunk (static).

    Returns:
      Scalar weighted sum.
    """
    return _chunked_ce_fwd(h, table, target, weight, chunk)[0]


chunked_softmax_ce.defvjp(_chunked_ce_fwd, _chunked_ce_bwd)


def info_nce(
    z1: jax.Array,
    z2: jax.Array,
    temperature: float = 1.0,
    valid: jax.Array | None = None,
) -> jax.Array:
    """ICLRec `NCELoss`: 2B x 2B InfoNCE between two views (no de-noising).

    Logits are [[z1 z2^T, z1 z1^T], [z2 z2^T, z2 z1^T]] / temperature with the self-similarity
    diagonals of z1 z1^T and z2 z2^T removed; row i's positive is the matching row of the other
    view. Cross-entropy is averaged over the 2B rows.

    Args:
      z1: float32[B, F] first view (flattened or pooled representation).
      z2: float32[B, F] second view (or the assigned centroids, for the intent loss).
      temperature: softmax temperature (ICLRec: 1).
      valid: bool[B] real rows; padding rows are neither anchors nor negatives.

    Returns:
      Scalar loss.
    """
    b = z1.shape[0]
    valid = jnp.ones((b,), bool) if valid is None else valid
    sim11 = z1 @ z1.T / temperature
    sim22 = z2 @ z2.T / temperature
    sim12 = z1 @ z2.T / temperature
    eye = jnp.eye(b, dtype=bool)
    drop = eye | ~valid[None, :]
    sim11 = jnp.where(drop, _NEG, sim11)
    sim22 = jnp.where(drop, _NEG, sim22)
    sim21 = jnp.where(~valid[None, :], _NEG, sim12.T)
    sim12 = jnp.where(~valid[None, :], _NEG, sim12)
    logits = jnp.concatenate(
        [jnp.concatenate([sim12, sim11], 1), jnp.concatenate([sim22, sim21], 1)], 0
    )  # [2B, 2B]
    labels = jnp.arange(2 * b)
    lse = jax.nn.logsumexp(logits, axis=-1)
    pos = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    rows = jnp.concatenate([valid, valid])
    return _mean_over(lse - pos, rows)


def intent_contrast(
    v1: jax.Array,
    v2: jax.Array,
    assigned_centroids: jax.Array,
    temperature: float = 1.0,
    valid: jax.Array | None = None,
) -> jax.Array:
    """ICLRec `PCLoss` (one cluster set, no de-noising).

    (info_nce(v1, c) + info_nce(v2, c)) / 2 where c[b] is the (L2-normalised) centroid assigned
    to sequence b's original (un-augmented) representation.

    Args:
      v1: float32[B, D] mean-pooled first view.
      v2: float32[B, D] mean-pooled second view.
      assigned_centroids: float32[B, D] centroid of each row's cluster.
      temperature: softmax temperature (ICLRec: 1).
      valid: bool[B] real rows.

    Returns:
      Scalar loss.
    """
    return 0.5 * (
        info_nce(v1, assigned_centroids, temperature, valid)
        + info_nce(v2, assigned_centroids, temperature, valid)
    )
