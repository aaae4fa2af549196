"""Losses of the sequential backbone (docs/method.md section 2.2), as pure functions.

* `next_item_bce`: ICLRec's next-item loss (`Trainer.cross_entropy`), one sampled negative per
  position, averaged over non-pad positions.
* `full_softmax_ce`: cross-entropy over all real items at every non-pad position (SASRec-CE,
  the standard-protocol variant); PAD is excluded from the softmax.
* `info_nce`: ICLRec's `NCELoss` (SimCLR-style 2B x 2B InfoNCE, dot-product similarity).
* `intent_contrast`: ICLRec's `PCLoss` without de-noising: each view against its sequence's
  assigned centroid, with `info_nce`, averaged over the two views.
* `intent_contrast_pairs`: ICLRec's whole intent term, `intent_contrast` summed over the
  augmentation pairs (views 2p and 2p + 1).
* `ce_with_intent`: the intent-aligned backbone's loss (loss="ce_intent"): SASRec-CE plus
  weight * `intent_contrast_pairs`.

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
        more than [chunk_size, N+1] logits, skips positions without a target and is several
        times faster on CPU (memory-bound otherwise).

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


def _live_first(h, tgt, w, chunk):
    """Moves the positions with weight > 0 to the front (stable), padded to whole chunks.

    Returns (order int32[T], h [T', D], tgt [T'], w [T'], number of chunks holding a live
    position); T' = T rounded up to a multiple of `chunk`, padding has weight 0.
    """
    live = w > 0
    n_live = jnp.sum(live, dtype=jnp.int32)
    dest = jnp.where(live, jnp.cumsum(live) - 1, n_live + jnp.cumsum(~live) - 1)
    order = jnp.zeros_like(dest).at[dest].set(jnp.arange(dest.shape[0], dtype=dest.dtype))
    pad = (-h.shape[0]) % chunk
    h = jnp.pad(h[order], ((0, pad), (0, 0)))
    tgt, w = jnp.pad(tgt[order], (0, pad)), jnp.pad(w[order], (0, pad))
    live_chunks = (n_live + chunk - 1) // chunk
    return order, h, tgt, w, live_chunks


def _chunk_stats(hh, table):
    """Per chunk of positions: (e = exp(logits - max) with the PAD column 0, max, sum of e)."""
    logits = jnp.dot(hh, table.T).at[:, 0].set(_NEG)
    m = jnp.max(logits, -1)
    e = jnp.exp(logits - m[:, None])
    return e, m, jnp.sum(e, -1)


def _chunk_loss(hh, tt, ww, table, m, s):
    """sum over the chunk of ww * (logsumexp - target logit); target logit = h . e_target."""
    target_logit = jnp.sum(hh * jnp.take(table, tt, axis=0), -1)
    return jnp.sum(jnp.where(ww > 0, m + jnp.log(s) - target_logit, 0.0) * ww)


def _chunked_ce(h, table, tgt, w, chunk, with_grads):
    order, hc, tc, wc, live_chunks = _live_first(h, tgt, w, chunk)
    dh0 = jnp.zeros_like(hc) if with_grads else None

    def body(i, carry):
        loss, dtable, dh = carry
        start = i * chunk
        hh = jax.lax.dynamic_slice_in_dim(hc, start, chunk)
        tt = jax.lax.dynamic_slice_in_dim(tc, start, chunk)
        ww = jax.lax.dynamic_slice_in_dim(wc, start, chunk)
        e, m, s = _chunk_stats(hh, table)
        loss = loss + _chunk_loss(hh, tt, ww, table, m, s)
        if not with_grads:
            return loss, dtable, dh
        # d/dh_t = w_t (softmax_t @ table - e_target); d/dtable = sum_t w_t (softmax_t - 1_t)^T h_t.
        # The 1/s normalisation and the weights go on the small [chunk, D] side.
        scale = (ww / s)[:, None]
        dhh = jnp.dot(e, table) * scale - ww[:, None] * jnp.take(table, tt, axis=0)
        dtable = dtable + jnp.einsum("cn,cd->nd", e, hh * scale)
        dtable = dtable.at[tt].add(-ww[:, None] * hh)
        return loss, dtable, jax.lax.dynamic_update_slice_in_dim(dh, dhh, start, 0)

    init = (jnp.zeros((), jnp.float32), jnp.zeros_like(table) if with_grads else None, dh0)
    loss, dtable, dh = jax.lax.fori_loop(0, live_chunks, body, init)
    if not with_grads:
        return loss, None
    dh_full = jnp.zeros_like(h).at[order].set(dh[: h.shape[0]])
    return loss, (dh_full, dtable)


def _chunked_ce_fwd(h, table, tgt, w, chunk):
    loss, grads = _chunked_ce(h, table, tgt, w, chunk, with_grads=True)
    return loss, grads


def _chunked_ce_bwd(chunk, grads, g):
    dh, dtable = grads
    return g * dh, g * dtable, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_softmax_ce(
    h: jax.Array, table: jax.Array, target: jax.Array, weight: jax.Array, chunk: int
) -> jax.Array:
    """sum_t weight[t] * CE(h[t] . table^T, target[t]), PAD column excluded, in chunks.

    Positions with weight 0 are moved behind the others and their chunks skipped (a loop with a
    data-dependent trip count), so padding positions cost nothing. Under differentiation the
    forward pass also computes the gradients chunk by chunk (softmax, then its products with
    the table and the chunk's h) and the backward pass only scales them by the cotangent: one
    logits matmul per chunk instead of two, and no [T, N+1] buffer. Not differentiable twice.

    Args:
      h: float32[T, D] flattened positions.
      table: float32[N+1, D] item embeddings.
      target: int32[T] targets (anything where weight is 0).
      weight: float32[T] per-position weights (0 = ignored; must be >= 0).
      chunk: positions per chunk (static).

    Returns:
      Scalar weighted sum.
    """
    return _chunked_ce(h, table, target, weight, chunk, with_grads=False)[0]


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


def intent_contrast_pairs(
    view_means: jax.Array,
    assigned_centroids: jax.Array,
    temperature: float = 1.0,
    valid: jax.Array | None = None,
) -> jax.Array:
    """ICLRec's intent term: `intent_contrast` summed over the P augmentation pairs.

    Args:
      view_means: float32[2P, B, D] mean-pooled views; pair p is (view_means[2p],
        view_means[2p + 1]).
      assigned_centroids: float32[B, D] (L2-normalised) centroid of each row's cluster.
      temperature: softmax temperature (ICLRec: 1).
      valid: bool[B] real rows.

    Returns:
      Scalar loss (a sum over pairs, as ICLRec's `trainers.py`).
    """
    total = 0.0
    for p in range(view_means.shape[0] // 2):
        total += intent_contrast(
            view_means[2 * p], view_means[2 * p + 1], assigned_centroids, temperature, valid
        )
    return total


def ce_with_intent(
    seq_out: jax.Array,
    view_means: jax.Array,
    item_table: jax.Array,
    target_ids: jax.Array,
    assigned_centroids: jax.Array,
    intent_weight: float,
    temperature: float = 1.0,
    valid: jax.Array | None = None,
    chunk_size: int = 0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """SASRec-CE plus ICLRec's intent term (the intent-aligned backbone, loss="ce_intent").

    Args:
      seq_out: float32[B, L, D] outputs of the un-augmented sequences.
      view_means: float32[2P, B, D] mean-pooled augmented views (`intent_contrast_pairs`).
      item_table: float32[N+1, D] item embeddings (row 0 = PAD).
      target_ids: int32[B, L] next item (0 = no target).
      assigned_centroids: float32[B, D] unit centroid of each row's cluster.
      intent_weight: weight of the intent term (ICLRec's intent_cf_weight).
      temperature: the intent InfoNCE's temperature.
      valid: bool[B] real rows.
      chunk_size: as `full_softmax_ce`.

    Returns:
      (loss, ce, intent): loss = ce + intent_weight * intent, scalars.
    """
    ce = full_softmax_ce(seq_out, item_table, target_ids, chunk_size)
    intent = intent_contrast_pairs(view_means, assigned_centroids, temperature, valid)
    return ce + intent_weight * intent, ce, intent
