"""Tests for latentcrs_jax.losses.sequential against numpy closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.losses import sequential

RNG = np.random.default_rng(0)


def _np_logsumexp(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_next_item_bce_matches_authors_formula():
    b, seq_len, d, n = 3, 5, 4, 9
    out = RNG.normal(size=(b, seq_len, d)).astype(np.float32)
    table = RNG.normal(size=(n + 1, d)).astype(np.float32)
    pos = RNG.integers(1, n + 1, size=(b, seq_len)).astype(np.int32)
    pos[0, :2] = 0  # left padding
    pos[2] = 0  # an all-padding row
    neg = RNG.integers(1, n + 1, size=(b, seq_len)).astype(np.int32)
    got = sequential.next_item_bce(out, table, pos, neg)
    pl = (out * table[pos]).sum(-1)
    nl = (out * table[neg]).sum(-1)
    ist = (pos > 0).astype(np.float64)
    want = (
        np.sum(-np.log(_np_sigmoid(pl) + 1e-24) * ist - np.log(1 - _np_sigmoid(nl) + 1e-24) * ist)
        / ist.sum()
    )
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_losses_are_zero_without_targets():
    out = jnp.ones((2, 3, 4))
    table = jnp.ones((5, 4))
    zeros = jnp.zeros((2, 3), jnp.int32)
    assert float(sequential.next_item_bce(out, table, zeros, zeros)) == 0.0
    assert float(sequential.full_softmax_ce(out, table, zeros)) == 0.0
    g = jax.grad(lambda t: sequential.full_softmax_ce(out, t, zeros))(table)
    assert np.all(np.isfinite(g))


def test_full_softmax_ce_excludes_pad():
    b, seq_len, d, n = 2, 4, 3, 7
    out = RNG.normal(size=(b, seq_len, d)).astype(np.float32)
    table = RNG.normal(size=(n + 1, d)).astype(np.float32)
    tgt = RNG.integers(1, n + 1, size=(b, seq_len)).astype(np.int32)
    tgt[1, :3] = 0
    got = sequential.full_softmax_ce(out, table, tgt)
    logits = out @ table[1:].T  # real items only
    ce = _np_logsumexp(logits) - np.take_along_axis(logits, tgt[..., None] - 1, -1)[..., 0]
    want = ce[tgt > 0].mean()
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _np_nce(z1, z2, t=1.0):
    """Literal numpy port of ICLRec NCELoss (intent_ids=None)."""
    sim11, sim22, sim12 = z1 @ z1.T / t, z2 @ z2.T / t, z1 @ z2.T / t
    d = sim12.shape[0]
    sim11[np.eye(d, dtype=bool)] = -np.inf
    sim22[np.eye(d, dtype=bool)] = -np.inf
    logits = np.concatenate(
        [np.concatenate([sim12, sim11], 1), np.concatenate([sim22, sim12.T], 1)], 0
    )
    labels = np.arange(2 * d)
    return np.mean(_np_logsumexp(logits) - logits[labels, labels])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_info_nce_matches_numpy(temperature):
    z1 = RNG.normal(size=(5, 6)).astype(np.float64)
    z2 = RNG.normal(size=(5, 6)).astype(np.float64)
    got = sequential.info_nce(z1.astype(np.float32), z2.astype(np.float32), temperature)
    np.testing.assert_allclose(got, _np_nce(z1, z2, temperature), rtol=1e-5)


def test_info_nce_padding_rows_are_ignored():
    z1 = RNG.normal(size=(4, 3)).astype(np.float32)
    z2 = RNG.normal(size=(4, 3)).astype(np.float32)
    pad1 = np.concatenate([z1, RNG.normal(size=(2, 3)).astype(np.float32)])
    pad2 = np.concatenate([z2, RNG.normal(size=(2, 3)).astype(np.float32)])
    valid = np.array([True] * 4 + [False] * 2)
    got = sequential.info_nce(pad1, pad2, 1.0, valid)
    np.testing.assert_allclose(
        got, _np_nce(z1.astype(np.float64), z2.astype(np.float64)), rtol=1e-5
    )
    g = jax.grad(lambda a: sequential.info_nce(a, pad2, 1.0, valid))(jnp.asarray(pad1))
    np.testing.assert_array_equal(np.asarray(g)[4:], 0.0)
    none_valid = jax.grad(lambda a: sequential.info_nce(a, pad2, 1.0, ~valid & False))(pad1)
    assert np.all(np.isfinite(np.asarray(none_valid)))


def test_intent_contrast_is_mean_of_two_nce():
    v1 = RNG.normal(size=(4, 3))
    v2 = RNG.normal(size=(4, 3))
    cents = RNG.normal(size=(3, 3))
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    assign = np.array([0, 2, 2, 1])
    got = sequential.intent_contrast(
        v1.astype(np.float32), v2.astype(np.float32), cents[assign].astype(np.float32)
    )
    want = 0.5 * (_np_nce(v1, cents[assign]) + _np_nce(v2, cents[assign]))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("chunk", [5, 16, 64])
def test_chunked_ce_matches_dense_value_and_grads(chunk):
    b, seq_len, d, n = 3, 7, 4, 11
    out = jnp.asarray(RNG.normal(size=(b, seq_len, d)).astype(np.float32))
    table = jnp.asarray(RNG.normal(size=(n + 1, d)).astype(np.float32))
    tgt = RNG.integers(1, n + 1, size=(b, seq_len)).astype(np.int32)
    tgt[0, :4] = 0
    tgt = jnp.asarray(tgt)
    dense = jax.value_and_grad(sequential.full_softmax_ce, argnums=(0, 1))(out, table, tgt)
    chunked = jax.value_and_grad(
        lambda o, t: sequential.full_softmax_ce(o, t, tgt, chunk_size=chunk), argnums=(0, 1)
    )(out, table)
    np.testing.assert_allclose(chunked[0], dense[0], rtol=1e-5)
    for g_c, g_d in zip(chunked[1], dense[1]):
        np.testing.assert_allclose(g_c, g_d, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(chunked[1][1])[0], 0.0)  # PAD row gets no gradient


def test_chunked_ce_skips_dead_chunks_and_scales_by_cotangent():
    # 40 positions, chunk 8: only 6 live positions scattered among dead ones, so most chunks
    # are skipped; the weights are non-uniform, duplicated targets hit the same table row.
    t, d, n = 40, 5, 9
    h = RNG.normal(size=(t, d)).astype(np.float32)
    table = RNG.normal(size=(n + 1, d)).astype(np.float32)
    tgt = np.zeros(t, np.int32)
    w = np.zeros(t, np.float32)
    live = np.array([3, 4, 17, 30, 31, 39])
    tgt[live] = [2, 2, 5, 9, 1, 2]
    w[live] = [0.5, 1.0, 2.0, 0.25, 1.5, 1.0]

    def np_loss(h_, table_):
        logits = h_ @ table_.T
        logits[:, 0] = -np.inf
        per_pos = _np_logsumexp(logits[live]) - logits[live, tgt[live]]
        return float(np.sum(w[live] * per_pos))

    args = (jnp.asarray(tgt), jnp.asarray(w), 8)
    got = sequential.chunked_softmax_ce(jnp.asarray(h), jnp.asarray(table), *args)
    np.testing.assert_allclose(got, np_loss(h.astype(np.float64), table), rtol=1e-5)

    # Gradients of 3 * loss against a dense autodiff reference with the same weights.
    def dense(hh, tt):
        logits = (hh @ tt.T).at[:, 0].set(-1e30)
        lse = jax.nn.logsumexp(logits, -1)
        return 3.0 * jnp.sum(w * (lse - logits[jnp.arange(t), tgt]))

    want = jax.grad(dense, argnums=(0, 1))(jnp.asarray(h), jnp.asarray(table))
    fused = jax.grad(
        lambda hh, tt: 3.0 * sequential.chunked_softmax_ce(hh, tt, *args), argnums=(0, 1)
    )(jnp.asarray(h), jnp.asarray(table))
    for g_f, g_d in zip(fused, want):
        np.testing.assert_allclose(g_f, g_d, rtol=1e-4, atol=1e-6)
    dead = np.setdiff1d(np.arange(t), live)
    np.testing.assert_array_equal(np.asarray(fused[0])[dead], 0.0)
