"""Tests for latentcrs_jax.models.sasrec: shapes, causality, padding invariance, init, LN."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.models import sasrec, sasrec_layers

CFG = sasrec.SASRecConfig(num_items=30, max_len=8, hidden=16, num_layers=2, num_heads=2)


@pytest.fixture(scope="module")
def params():
    return sasrec.init_params(CFG, jax.random.key(0))


def _seq():
    return jnp.array([[0, 0, 0, 4, 9, 2, 7, 5], [3, 1, 8, 8, 2, 6, 11, 30]], jnp.int32)


def test_shapes_and_methods(params):
    model = sasrec.SASRec(CFG)
    out = model.apply(params, _seq(), deterministic=True)
    assert out.shape == (2, 8, 16) and out.dtype == jnp.float32
    h = model.apply(params, _seq(), deterministic=True, method=sasrec.SASRec.user_state)
    np.testing.assert_allclose(h, out[:, -1], rtol=1e-5, atol=1e-6)  # last block at L-1 only
    table = model.apply(params, method=sasrec.SASRec.item_embeddings)
    assert table.shape == (31, 16)
    scores = model.apply(params, _seq(), method=sasrec.SASRec.score_all)
    np.testing.assert_allclose(scores, h @ table.T, rtol=1e-6, atol=1e-7)
    # A shorter input (L < max_len) is accepted; a longer one is an error.
    assert model.apply(params, _seq()[:, -5:], deterministic=True).shape == (2, 5, 16)
    with pytest.raises(ValueError, match="max_len"):
        model.apply(params, jnp.ones((1, 9), jnp.int32), deterministic=True)


def test_init_statistics(params):
    p = params["params"]
    emb = np.asarray(p["item_embed"]["embedding"])
    assert abs(emb.std() - 0.02) < 0.004
    assert np.all(np.asarray(p["attn_0"]["query"]["bias"]) == 0)
    assert np.all(np.asarray(p["ffn_1"]["ln"]["scale"]) == 1)
    assert p["ffn_0"]["dense_1"]["kernel"].shape == (16, 64)


def test_causal_for_real_positions(params):
    model = sasrec.SASRec(CFG)
    seq = _seq()
    changed = seq.at[:, -1].set(jnp.array([13, 14]))
    a = model.apply(params, seq, deterministic=True)
    b = model.apply(params, changed, deterministic=True)
    # Real positions before the changed one are unchanged; the last position changes.
    np.testing.assert_array_equal(a[0, 3:-1], b[0, 3:-1])
    np.testing.assert_array_equal(a[1, :-1], b[1, :-1])
    assert not np.allclose(a[:, -1], b[:, -1])


def test_padding_invariance(params):
    model = sasrec.SASRec(CFG)
    seq = _seq()
    base = model.apply(params, seq, deterministic=True)
    # The PAD embedding row never reaches a real position.
    p2 = jax.tree_util.tree_map(lambda x: x, params)
    emb = p2["params"]["item_embed"]["embedding"]
    p2["params"]["item_embed"]["embedding"] = emb.at[0].set(5.0)
    moved = model.apply(p2, seq, deterministic=True)
    np.testing.assert_allclose(moved[0, 3:], base[0, 3:], atol=1e-6)
    # Batch padding rows do not change other rows.
    padded = jnp.concatenate([seq, jnp.zeros((3, 8), jnp.int32)])
    np.testing.assert_allclose(model.apply(params, padded, deterministic=True)[:2], base, atol=1e-6)


def test_dropout_is_keyed_and_off_when_deterministic(params):
    model = sasrec.SASRec(CFG)
    seq = _seq()
    det = model.apply(params, seq, deterministic=True)
    d1 = model.apply(params, seq, deterministic=False, rngs={"dropout": jax.random.key(1)})
    d1b = model.apply(params, seq, deterministic=False, rngs={"dropout": jax.random.key(1)})
    d2 = model.apply(params, seq, deterministic=False, rngs={"dropout": jax.random.key(2)})
    np.testing.assert_array_equal(d1, d1b)
    assert not np.allclose(d1, d2) and not np.allclose(d1, det)


def test_tf_layernorm_matches_numpy():
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    ln = sasrec_layers.TFLayerNorm(eps=1e-12)
    v = ln.init(jax.random.key(0), x)
    got = ln.apply(v, x)
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mask_values():
    allowed = sasrec_layers.attention_mask(jnp.array([[0, 2, 3]]))
    want = np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1]], bool)
    np.testing.assert_array_equal(allowed[0, 0], want)
    scores = jnp.arange(9.0).reshape(1, 1, 3, 3)
    got = sasrec_layers.masked_scores(
        scores, allowed
    )  # the authors' additive (1 - allowed) * -10000
    np.testing.assert_array_equal(got, scores + (1.0 - want) * -10000.0)


def test_gelu_is_exact_erf_gelu_with_its_derivative():
    x = np.linspace(-9.0, 9.0, 301).astype(np.float32)
    erf = np.vectorize(math.erf)
    want = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    # float32 1 + erf(x / sqrt 2) cancels for x << 0: absolute errors up to ~5e-7 there,
    # as in the authors' erf formula.
    np.testing.assert_allclose(sasrec_layers.gelu(jnp.asarray(x)), want, rtol=1e-6, atol=1e-6)
    dwant = 0.5 * (1.0 + erf(x / math.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / math.sqrt(
        2.0 * math.pi
    )
    grad = jax.vmap(jax.grad(sasrec_layers.gelu))(jnp.asarray(x))
    np.testing.assert_allclose(grad, dwant, rtol=1e-5, atol=1e-6)
    ref = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(jnp.asarray(x))
    np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        sasrec.SASRecConfig(num_items=5, hidden=10, num_heads=3)
    with pytest.raises(ValueError, match="query_blocks"):
        sasrec.SASRecConfig(num_items=5, query_blocks=0)


def test_query_blocks_cover_the_positions():
    assert sasrec_layers.query_blocks(8, 1) == [(0, 8)]
    assert sasrec_layers.query_blocks(200, 4) == [(0, 50), (50, 100), (100, 150), (150, 200)]
    assert sasrec_layers.query_blocks(7, 3) == [(0, 2), (2, 5), (5, 7)]
    assert sasrec_layers.query_blocks(2, 4) == [(0, 1), (1, 2)]  # never an empty block
    assert sasrec_layers.query_blocks(30, 0) == [(0, 30)]


@pytest.mark.parametrize(
    "blocks", [pytest.param(2, marks=pytest.mark.slow), 3, pytest.param(8, marks=pytest.mark.slow)]
)
def test_block_causal_attention_equals_full_at_real_positions(params, blocks, monkeypatch):
    """Skipping the causally masked key blocks changes nothing a real position sees (the
    masked keys' weights underflow to exactly 0); value and gradient of a loss over real
    positions match. Padding query rows (every key masked) may differ: not compared."""
    monkeypatch.setattr(sasrec_layers, "MIN_BLOCK", 1)  # blocks of a few positions for L = 8
    seq = _seq()
    real = np.asarray(seq > 0)
    blocked = sasrec.SASRec(sasrec.SASRecConfig(**{**CFG.__dict__, "query_blocks": blocks}))
    plain = sasrec.SASRec(CFG)

    def loss(model, p):
        out = model.apply(p, seq, deterministic=True)
        return jnp.sum(jnp.where(real[..., None], jnp.tanh(out), 0.0)), out

    def value_and_grad(model):  # jitted: one compilation instead of op-by-op dispatch
        return jax.jit(jax.value_and_grad(lambda p: loss(model, p), has_aux=True))(params)

    (l_plain, out_plain), g_plain = value_and_grad(plain)
    (l_block, out_block), g_block = value_and_grad(blocked)
    np.testing.assert_allclose(np.asarray(out_block)[real], np.asarray(out_plain)[real], atol=1e-5)
    np.testing.assert_allclose(l_block, l_plain, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_block)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The row of pads in front of sequence 0 is where the outputs may legitimately differ.
    assert not np.allclose(np.asarray(out_block)[0, 0], np.asarray(out_plain)[0, 0], atol=1e-5)


def test_right_aligned_trimmed_input_equals_full_padding(params):
    model = sasrec.SASRec(CFG)
    seq = _seq()[:1]  # 5 real items, 3 pad columns
    full = model.apply(params, seq, deterministic=True)
    trimmed = model.apply(params, seq[:, 3:], deterministic=True, right_aligned=True)
    np.testing.assert_allclose(trimmed, full[:, 3:], atol=1e-6)
    np.testing.assert_array_equal(
        model.apply(params, seq, deterministic=True, right_aligned=True), full
    )


def test_remat_gives_same_outputs_and_grads(params):
    seq = _seq()
    rngs = {"dropout": jax.random.key(3)}

    def loss(model, p):
        return jnp.sum(model.apply(p, seq, deterministic=False, rngs=rngs) ** 2)

    plain = sasrec.SASRec(CFG)
    remat = sasrec.SASRec(sasrec.SASRecConfig(**{**CFG.__dict__, "remat": True}))
    np.testing.assert_allclose(loss(remat, params), loss(plain, params), rtol=1e-6)
    g_plain = jax.grad(lambda p: loss(plain, p))(params)
    g_remat = jax.grad(lambda p: loss(remat, p))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g_plain), jax.tree_util.tree_leaves(g_remat)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("rate", "bits"), [(0.5, 1), (0.25, 2), (0.2, 8)])
def test_dropout_keep_mask_bits_and_rate(rate, bits):
    key = jax.random.key(7)
    shape = (3, 1000, 7)  # 21000 draws: not a multiple of 32 / bits for bits = 1
    keep = np.asarray(sasrec_layers.dropout_keep_mask(key, shape, rate))
    # Closed form: draw i is bits [b * (i % (32 / b)), ...) of word i // (32 / b).
    per_word = 32 // bits
    n = np.prod(shape)
    words = np.asarray(jax.random.bits(key, (-(-n // per_word),), jnp.uint32)).astype(np.uint64)
    shifts = np.arange(0, 32, bits, dtype=np.uint64)
    draws = ((words[:, None] >> shifts[None, :]) & (2**bits - 1)).reshape(-1)[:n]
    threshold = round(rate * 2**bits)
    np.testing.assert_array_equal(keep.reshape(-1), draws >= threshold)
    want = 1 - threshold / 2**bits  # 0.2 is quantised to 51/256
    assert abs(keep.mean() - want) < 4 * np.sqrt(want * (1 - want) / n)


def test_dropout_preserves_the_mean():
    x = jnp.ones((200, 500))
    for rate in (0.5, 0.2):
        layer = sasrec_layers.Dropout(rate)
        y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
        assert abs(y.mean() - 1.0) < 0.02
        np.testing.assert_allclose(np.unique(y), [0.0, 256 / (256 - round(rate * 256))], rtol=1e-6)


PRE = sasrec.SASRecConfig(
    num_items=30, max_len=8, hidden=16, num_layers=2, num_heads=2, block="pre_ln",
    ffn_mult=1, ln_eps=1e-8,
)  # fmt: skip


def _np_ln(x, p, eps):
    u = x.mean(-1, keepdims=True)
    s = np.square(x - u).mean(-1, keepdims=True)
    return (x - u) / np.sqrt(s + eps) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _np_pre_ln_sasrec(params, ids, cfg):
    """The original SASRec block (Kang & McAuley; pmixer's port) in float64 numpy, eval mode.
    With `cfg.positions == "from_start"` each row's items are numbered from its first one (the
    right-padded SASRec of the published SASRec-CE runs, whose row k-th item has position k)."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    ids = np.asarray(ids)
    b, seq_len = ids.shape
    heads, dh = cfg.num_heads, cfg.hidden // cfg.num_heads
    keep = (ids > 0)[..., None]
    if cfg.positions == "from_start":
        pads = (ids == 0).sum(1, keepdims=True)  # left padding: real items start at column pads
        pos = np.maximum(np.arange(seq_len)[None] - pads, 0)
    else:
        pos = np.broadcast_to(np.arange(seq_len), ids.shape)
    x = p["item_embed"]["embedding"][ids] * math.sqrt(cfg.hidden) + p["pos_embed"]["embedding"][pos]
    x = x * keep
    allowed = np.tril(np.ones((seq_len, seq_len), bool))[None] & (ids > 0)[:, None, :]
    for i in range(cfg.num_layers):
        a, f = p[f"attn_{i}"], p[f"ffn_{i}"]
        qn = _np_ln(x, a["ln"], cfg.ln_eps)
        q, k, v = (
            _np_dense(t, a[n]).reshape(b, seq_len, heads, dh)
            for t, n in ((qn, "query"), (x, "key"), (x, "value"))
        )
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        scores = np.where(allowed[:, None], scores, scores - 10000.0)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, seq_len, cfg.hidden)
        x = qn + _np_dense(ctx, a["dense"])
        h = _np_ln(x, f["ln"], cfg.ln_eps)
        x = (h + _np_dense(np.maximum(_np_dense(h, f["dense_1"]), 0.0), f["dense_2"])) * keep
    return _np_ln(x, p["last_ln"], cfg.ln_eps)


def test_pre_ln_block_matches_a_numpy_reference():
    params = sasrec.init_params(PRE, jax.random.key(1))
    # LayerNorm scales and biases at their init (1, 0) would hide a mix-up: perturb them.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: (
            a + 0.1 * jax.random.normal(jax.random.key(len(str(path))), a.shape)
            if "ln" in str(path)
            else a
        ),
        params,
    )
    model = sasrec.SASRec(PRE)
    out = model.apply(params, _seq(), deterministic=True)
    np.testing.assert_allclose(out, _np_pre_ln_sasrec(params, _seq(), PRE), atol=2e-5)
    h = model.apply(params, _seq(), deterministic=True, method=sasrec.SASRec.user_state)
    np.testing.assert_allclose(h, out[:, -1], atol=1e-6)
    trimmed = model.apply(params, _seq()[:1, 3:], deterministic=True, right_aligned=True)
    np.testing.assert_allclose(trimmed, out[:1, 3:], atol=1e-5)  # left padding changes nothing
    # Causal at real positions: a later item never changes an earlier output.
    later = _seq().at[0, -1].set(1)
    np.testing.assert_allclose(
        model.apply(params, later, deterministic=True)[0, :-1], out[0, :-1], atol=1e-6
    )
    with pytest.raises(ValueError, match="block must be one of"):
        sasrec.SASRecConfig(num_items=5, block="pre-ln")


def test_from_start_positions_match_the_reference_and_ignore_padding_width():
    cfg = dataclasses.replace(PRE, positions="from_start")
    params = sasrec.init_params(cfg, jax.random.key(2))
    model = sasrec.SASRec(cfg)
    out = model.apply(params, _seq(), deterministic=True)
    np.testing.assert_allclose(out, _np_pre_ln_sasrec(params, _seq(), cfg), atol=2e-5)
    # The row's real items get positions 0..4 however much padding is in front of them.
    real = _seq()[:1, 3:]
    for ids in (real, jnp.pad(real, ((0, 0), (1, 0)))):
        for right_aligned in (False, True):
            got = model.apply(params, ids, deterministic=True, right_aligned=right_aligned)
            np.testing.assert_allclose(got[:, -5:], out[:1, 3:], atol=1e-5)
    # A row without padding has the same position ids either way.
    end = sasrec.SASRec(dataclasses.replace(cfg, positions="from_end"))
    np.testing.assert_array_equal(end.apply(params, _seq(), deterministic=True)[1], out[1])
    # ... and a padded one does not (its items sit at 3..7 from the end, 0..4 from the start).
    assert not np.allclose(end.apply(params, _seq(), deterministic=True)[0, 3:], out[0, 3:])
    # The post-LN block uses the same ids (checked through its padding-width invariance).
    post = sasrec.SASRec(dataclasses.replace(CFG, positions="from_start"))
    p2 = sasrec.init_params(post.cfg, jax.random.key(3))
    wide = post.apply(p2, _seq()[:1], deterministic=True)
    np.testing.assert_allclose(post.apply(p2, real, deterministic=True), wide[:, 3:], atol=1e-5)
    with pytest.raises(ValueError, match="positions must be one of"):
        sasrec.SASRecConfig(num_items=5, positions="start")


@pytest.mark.parametrize("block", ["post_ln", "pre_ln"])
def test_pad_row_gets_no_gradient_from_pad_lookups(params, block):
    """As PyTorch's `nn.Embedding(padding_idx=0)`: a loss over every output position (ICLRec's
    instance contrast reads PAD positions too) moves real items' rows but never row 0."""
    model = sasrec.SASRec(dataclasses.replace(CFG, block=block))
    p = params if block == "post_ln" else sasrec.init_params(model.cfg, jax.random.key(0))

    def loss(p):
        return jnp.sum(model.apply(p, _seq(), deterministic=True) ** 2)

    table_grad = np.asarray(jax.grad(loss)(p)["params"]["item_embed"]["embedding"])
    assert not table_grad[0].any()
    assert np.abs(table_grad[[4, 9, 2, 7, 5]]).min() > 0
    if block == "pre_ln":
        return  # PAD positions are zeroed after the embeddings: row 0 feeds nothing.
    # The forward value of a PAD lookup is unchanged: row 0 still feeds PAD positions.
    zeroed = jax.tree_util.tree_map(lambda a: a, p)
    zeroed["params"]["item_embed"]["embedding"] = (
        p["params"]["item_embed"]["embedding"].at[0].set(0)
    )
    assert not np.allclose(
        model.apply(zeroed, _seq(), deterministic=True)[0, :3],
        model.apply(p, _seq(), deterministic=True)[0, :3],
    )
