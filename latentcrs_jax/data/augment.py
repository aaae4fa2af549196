"""ICLRec's sequence augmentations (`data_augmentation.py`) as jitted functions of a PRNG key.

Inputs are left-padded int32 batches [B, W] (0 = PAD); a row's sequence is its non-zero suffix
of length n. Each function returns a left-padded [B, W] batch, one independent draw per row.

* `crop` (tau = 0.2): m = int(tau * n) consecutive items from a uniform start in
  [0, n - m - 1] (Python `randint` is inclusive); if m < 1, the single item at that start.
* `mask` (gamma = 0.7): int(gamma * n) distinct positions, chosen uniformly, set to 0.
* `reorder` (beta = 0.2): a window of int(beta * n) items from a uniform start in
  [0, n - m - 1] is shuffled uniformly.
* `random_augment`: per row, one of the three, chosen uniformly (ICLRec's `Random`).

Counts reproduce Python's `int(rate * n)` in float64 exactly (e.g. int(0.7 * 30) == 20), via a
host-computed table indexed by n. The random streams are JAX's, not Python `random`'s, so draws
differ from the authors' while the distributions are the same. Empty rows (n = 0) stay empty.

ICLRec augments the whole S[:-3] and then keeps the last max_len items; to reproduce that,
pass the full left-padded sequence (width >= the longest sequence) and slice `[:, -max_len:]`
afterwards, or call `random_augment_suffix(key, full, max_len)`, which has the same
distribution but computes only the kept columns (O(max_len) per row instead of sorts over the
whole width; training/pretrain/iclrec.py uses it).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

CROP_TAU = 0.2
MASK_GAMMA = 0.7
REORDER_BETA = 0.2


def _count_table(rate: float, width: int) -> jax.Array:
    """int32[width + 1] with entry n = int(rate * n) in Python float64 semantics."""
    return jnp.asarray(np.array([int(rate * n) for n in range(width + 1)], np.int32))


def _crop_row(x: jax.Array, key: jax.Array, counts: jax.Array) -> jax.Array:
    w = x.shape[0]
    n = jnp.sum(x > 0).astype(jnp.int32)
    sub = counts[n]
    start = jax.random.randint(key, (), 0, jnp.maximum(n - sub, 1))
    m = jnp.where(n > 0, jnp.maximum(sub, 1), 0)
    j = jnp.arange(w)
    src = (w - n) + start + (j - (w - m))  # index into x of output position j
    keep = j >= w - m
    return jnp.where(keep, x[jnp.clip(src, 0, w - 1)], 0)


def _mask_row(x: jax.Array, key: jax.Array, counts: jax.Array) -> jax.Array:
    w = x.shape[0]
    n = jnp.sum(x > 0).astype(jnp.int32)
    k = counts[n]
    real = jnp.arange(w) >= w - n
    u = jnp.where(real, jax.random.uniform(key, (w,)), 2.0)
    rank = jnp.argsort(jnp.argsort(u))  # rank among the row's real positions come first
    return jnp.where(real & (rank < k), 0, x)


def _reorder_row(x: jax.Array, key: jax.Array, counts: jax.Array) -> jax.Array:
    w = x.shape[0]
    n = jnp.sum(x > 0).astype(jnp.int32)
    sub = counts[n]
    k_start, k_perm = jax.random.split(key)
    start = jax.random.randint(k_start, (), 0, jnp.maximum(n - sub, 1)) + (w - n)
    pos = jnp.arange(w)
    inside = (pos >= start) & (pos < start + sub)
    u = jax.random.uniform(k_perm, (w,))
    sort_key = jnp.where(inside, start + u * sub, pos.astype(jnp.float32))
    return x[jnp.argsort(sort_key, stable=True)]


def _apply_rows(row_fn, key: jax.Array, x: jax.Array, rate: float) -> jax.Array:
    counts = _count_table(rate, x.shape[1])
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(row_fn, in_axes=(0, 0, None))(x, keys, counts)


@functools.partial(jax.jit, static_argnames=("tau",))
def crop(key: jax.Array, x: jax.Array, tau: float = CROP_TAU) -> jax.Array:
    """Crop augmentation.

    Args:
      key: PRNG key.
      x: int32[B, W] left-padded sequences.
      tau: kept fraction.

    Returns:
      int32[B, W] left-padded crops.
    """
    return _apply_rows(_crop_row, key, x, tau)


@functools.partial(jax.jit, static_argnames=("gamma",))
def mask(key: jax.Array, x: jax.Array, gamma: float = MASK_GAMMA) -> jax.Array:
    """Mask augmentation: int(gamma * n) items set to 0 (PAD).

    Args:
      key: PRNG key.
      x: int32[B, W] left-padded sequences.
      gamma: masked fraction.

    Returns:
      int32[B, W] (same alignment, masked items = 0).
    """
    return _apply_rows(_mask_row, key, x, gamma)


@functools.partial(jax.jit, static_argnames=("beta",))
def reorder(key: jax.Array, x: jax.Array, beta: float = REORDER_BETA) -> jax.Array:
    """Reorder augmentation: a window of int(beta * n) items shuffled.

    Args:
      key: PRNG key.
      x: int32[B, W] left-padded sequences.
      beta: shuffled fraction.

    Returns:
      int32[B, W] left-padded, same multiset per row.
    """
    return _apply_rows(_reorder_row, key, x, beta)


@functools.partial(jax.jit, static_argnames=("tau", "gamma", "beta"))
def random_augment(
    key: jax.Array,
    x: jax.Array,
    tau: float = CROP_TAU,
    gamma: float = MASK_GAMMA,
    beta: float = REORDER_BETA,
) -> jax.Array:
    """ICLRec `Random`: each row gets crop, mask or reorder, uniformly.

    Args:
      key: PRNG key.
      x: int32[B, W] left-padded sequences.
      tau: crop rate.
      gamma: mask rate.
      beta: reorder rate.

    Returns:
      int32[B, W] augmented, left-padded.
    """
    k_choice, k_crop, k_mask, k_reorder = jax.random.split(key, 4)
    choice = jax.random.randint(k_choice, (x.shape[0], 1), 0, 3)
    out = jnp.where(choice == 0, crop(k_crop, x, tau), mask(k_mask, x, gamma))
    return jnp.where(choice == 2, reorder(k_reorder, x, beta), out)


# ----------------------------------------------------------------------------------------------
# The last `out_len` columns only: same distribution as `random_augment(key, x)[:, -out_len:]`.
# ----------------------------------------------------------------------------------------------


def _crop_suffix(x: jax.Array, key: jax.Array, counts: jax.Array, out_len: int) -> jax.Array:
    """The last out_len columns of `crop` (one gather of out_len per row)."""
    b, w = x.shape
    n = jnp.sum(x > 0, axis=1, dtype=jnp.int32)[:, None]
    sub = counts[n]
    start = jax.random.randint(key, (b, 1), 0, jnp.maximum(n - sub, 1))
    m = jnp.where(n > 0, jnp.maximum(sub, 1), 0)
    j = jnp.arange(w - out_len, w)[None, :]  # output columns in the [B, W] frame
    src = (w - n) + start + (j - (w - m))
    keep = j >= w - m
    return jnp.where(keep, jnp.take_along_axis(x, jnp.clip(src, 0, w - 1), axis=1), 0)


def _mask_suffix(x: jax.Array, key: jax.Array, counts: jax.Array, out_len: int) -> jax.Array:
    """Selection sampling (Knuth's algorithm S) from the last item backwards.

    Walking the n real items from the right, item i (0 = last) is masked with probability
    (k - c) / (n - i), c = items masked so far: the masked set is a uniform k-subset of the n
    items, and its restriction to the last out_len items needs only out_len steps.
    """
    w = x.shape[1]
    n = jnp.sum(x > 0, axis=1, dtype=jnp.int32)
    k = counts[n]
    u = jax.random.uniform(key, (out_len, x.shape[0]))

    def step(c, xs):
        i, ui = xs
        hit = (i < n) & (ui * (n - i).astype(jnp.float32) < (k - c).astype(jnp.float32))
        return c + hit.astype(jnp.int32), hit

    _, hits = jax.lax.scan(step, jnp.zeros_like(n), (jnp.arange(out_len), u))
    masked = hits[::-1].T  # [B, out_len], column out_len - 1 = the last item
    suffix = x[:, w - out_len :]
    return jnp.where(masked, 0, suffix)


def _reorder_suffix(
    x: jax.Array, key: jax.Array, counts: jax.Array, width: int, out_len: int
) -> jax.Array:
    """The last out_len columns of `reorder`; the window's permutation sorts `width` keys.

    `width` must be >= every window length (int(beta * W) + 1 is).
    """
    b, w = x.shape
    n = jnp.sum(x > 0, axis=1, dtype=jnp.int32)[:, None]
    sub = counts[n]
    k_start, k_perm = jax.random.split(key)
    start = jax.random.randint(k_start, (b, 1), 0, jnp.maximum(n - sub, 1)) + (w - n)
    slot = jnp.arange(width)[None, :]
    keys = jnp.where(slot < sub, jax.random.uniform(k_perm, (b, width)), 2.0)
    perm = jnp.argsort(keys, axis=1, stable=True)  # first `sub` entries: a permutation of 0..sub-1
    j = jnp.arange(w - out_len, w)[None, :]
    inside = (j >= start) & (j < start + sub)
    offset = jnp.take_along_axis(perm, jnp.clip(j - start, 0, width - 1), axis=1)
    src = jnp.where(inside, start + offset, j)
    return jnp.take_along_axis(x, src, axis=1)


@functools.partial(jax.jit, static_argnames=("out_len", "tau", "gamma", "beta"))
def random_augment_suffix(
    key: jax.Array,
    x: jax.Array,
    out_len: int,
    tau: float = CROP_TAU,
    gamma: float = MASK_GAMMA,
    beta: float = REORDER_BETA,
) -> jax.Array:
    """`random_augment(key, x)[:, -out_len:]` in distribution, at O(out_len) cost per row.

    The augmentation still acts on the whole row (crop starts and the masked subset are
    uniform over all n items, the reorder window anywhere), but only the last `out_len`
    output columns are computed: crop gathers them, mask runs selection sampling over them
    only, and reorder sorts at most int(beta * W) + 1 keys instead of W. The random streams
    differ from `random_augment`'s (same key, different draws); the distribution is the same.

    Args:
      key: PRNG key.
      x: int32[B, W] left-padded sequences.
      out_len: L <= W, the kept columns.
      tau: crop rate.
      gamma: mask rate.
      beta: reorder rate.

    Returns:
      int32[B, L] augmented, left-padded.
    """
    if not 0 < out_len <= x.shape[1]:
        raise ValueError(f"out_len must be in 1..{x.shape[1]}, got {out_len}")
    k_choice, k_crop, k_mask, k_reorder = jax.random.split(key, 4)
    w = x.shape[1]
    choice = jax.random.randint(k_choice, (x.shape[0], 1), 0, 3)
    cropped = _crop_suffix(x, k_crop, _count_table(tau, w), out_len)
    masked = _mask_suffix(x, k_mask, _count_table(gamma, w), out_len)
    out = jnp.where(choice == 0, cropped, masked)
    width = int(beta * w) + 1
    reordered = _reorder_suffix(x, k_reorder, _count_table(beta, w), width, out_len)
    return jnp.where(choice == 2, reordered, out)
