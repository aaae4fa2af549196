"""Shape and algebra tests of the LatentCRS posterior and prior networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.models import latentcrs, sasrec

K, D, DX, B, N = 6, 8, 12, 5, 20


def _centroids():
    c = np.random.default_rng(0).normal(size=(K, D)).astype(np.float32)
    return jnp.asarray(c / np.linalg.norm(c, axis=1, keepdims=True))


def _inputs():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(B, D)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(B, DX)), jnp.float32)
    e = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    return h, x, e


def test_posterior_shapes_and_intents_from_centroids():
    model = latentcrs.Posterior(_centroids())
    h, _, _ = _inputs()
    params = model.init(jax.random.key(0), h)
    np.testing.assert_array_equal(params["params"]["intents"], _centroids())
    q, user = model.apply(params, h)
    assert q.shape == (B, K) and user.shape == (B, D)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    # The user vector is the q-weighted mixture of value-projected intents.
    values = model.apply(params, method=lambda m: m.value(m.intents))
    np.testing.assert_allclose(user, q @ values, rtol=1e-5, atol=1e-6)


def test_torch_default_init_bounds():
    model = latentcrs.Posterior(_centroids())
    h, _, _ = _inputs()
    params = model.init(jax.random.key(0), h)["params"]
    bound = 1 / np.sqrt(D)
    for name in ("query", "key", "value"):
        for leaf in jax.tree.leaves(params[name]):
            assert np.abs(leaf).max() <= bound + 1e-7
            assert np.abs(leaf).max() > bound / 2  # not all near zero


def test_prior_mixture_score_factorises():
    model = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16))
    h, x, e = _inputs()
    params = model.init(jax.random.key(0), h, x, deterministic=True)
    p, user = model.apply(params, h, x, deterministic=True)
    assert p.shape == (B, K)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    intent_vecs = model.apply(params, method=lambda m: m.intent_item_vectors())
    s = intent_vecs @ e.T  # s(m, y): [K, N]
    np.testing.assert_allclose(user @ e.T, p @ s, rtol=1e-4, atol=1e-5)


def test_prior_dropout_only_when_training():
    model = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16))
    h, x, _ = _inputs()
    params = model.init(jax.random.key(0), h, x, deterministic=True)
    a, _ = model.apply(params, h, x, deterministic=True)
    b, _ = model.apply(params, h, x, deterministic=True)
    np.testing.assert_array_equal(a, b)
    c, _ = model.apply(params, h, x, deterministic=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(a, c)


def test_prior_layer_norm_switch():
    h, x, _ = _inputs()
    with_ln = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16))
    without = latentcrs.Prior(
        _centroids(), latentcrs.PriorConfig(text_hidden=16, mlp_layer_norm=False)
    )
    p1 = with_ln.init(jax.random.key(0), h, x, deterministic=True)["params"]
    p2 = without.init(jax.random.key(0), h, x, deterministic=True)["params"]
    assert "mlp_norm_0" in p1 and "mlp_norm_0" not in p2
    assert "text_in" in p2 and "bias" not in p2["text_in"]


def _packed(rate, x, deterministic=False, seed=0):
    return latentcrs.PackedDropout(rate).apply(
        {}, x, deterministic=deterministic, rngs={"dropout": jax.random.key(seed)}
    )


def test_packed_dropout_keeps_the_exact_rate_and_rescales():
    x = jnp.ones((200, 500), jnp.float32)
    for rate in (0.5, 0.25, 0.3):  # 0.3 is no multiple of 1/256: nn.Dropout, not quantised
        y = np.asarray(_packed(rate, x))
        kept = y != 0
        np.testing.assert_allclose(y[kept], 1.0 / (1.0 - rate), rtol=1e-6)
        assert abs(kept.mean() - (1.0 - rate)) < 0.01, (rate, kept.mean())
    np.testing.assert_array_equal(_packed(0.5, x, deterministic=True), x)
    np.testing.assert_array_equal(_packed(0.5, x, seed=1), _packed(0.5, x, seed=1))
    assert not np.array_equal(_packed(0.5, x, seed=1), _packed(0.5, x, seed=2))


def _backbone(num_layers, dropout=0.5):
    cfg = sasrec.SASRecConfig(
        num_items=30,
        max_len=12,
        hidden=8,
        num_layers=num_layers,
        num_heads=2,
        hidden_dropout=dropout,
        attn_dropout=dropout,
    )
    ids = np.random.default_rng(2).integers(1, 31, size=(6, 9)).astype(np.int32)
    ids[0, :8] = 0  # a one-item history
    ids[1, :3] = 0
    return cfg, sasrec.init_params(cfg, jax.random.key(0)), jnp.asarray(ids)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_backbone_user_state_equals_the_full_forward(num_layers):
    cfg, variables, ids = _backbone(num_layers)
    full = sasrec.SASRec(cfg).apply(variables, ids, deterministic=True, method="user_state")
    last = latentcrs.backbone_user_state(cfg, variables, ids, deterministic=True)
    np.testing.assert_allclose(last, full, rtol=1e-5, atol=1e-5)
    # Dropout rate 0 in train mode: the same function.
    cfg0, variables, ids = _backbone(num_layers, dropout=0.0)
    full = sasrec.SASRec(cfg0).apply(variables, ids, deterministic=True, method="user_state")
    train = latentcrs.backbone_user_state(
        cfg0, variables, ids, deterministic=False, rng=jax.random.key(1)
    )
    np.testing.assert_allclose(train, full, rtol=1e-5, atol=1e-5)


def test_backbone_user_state_dropout_is_keyed():
    cfg, variables, ids = _backbone(2)

    def run(seed):
        return np.asarray(
            latentcrs.backbone_user_state(
                cfg, variables, ids, deterministic=False, rng=jax.random.key(seed)
            )
        )

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.allclose(run(1), run(2))
    det = latentcrs.backbone_user_state(cfg, variables, ids, deterministic=True)
    assert not np.allclose(run(1), det)


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature,top_k", [(0.5, 0), (1.0, 2), (0.3, 3), (2.0, K)])
def test_prior_temperature_and_top_k_match_numpy(temperature, top_k):
    h, x, _ = _inputs()
    base = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16))
    sharp = latentcrs.Prior(
        _centroids(),
        latentcrs.PriorConfig(text_hidden=16, temperature=temperature, top_k=top_k),
    )
    params = base.init(jax.random.key(0), h, x, deterministic=True)
    p0 = np.asarray(base.apply(params, h, x, deterministic=True, method="distribution"), np.float64)
    logits = np.log(p0)  # the intent logits up to a per-row constant
    z = logits / temperature
    if 0 < top_k < K:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]
        z = np.where(z >= kth, z, -np.inf)
    p = sharp.apply(params, h, x, deterministic=True, method="distribution")
    np.testing.assert_allclose(p, _np_softmax(z), rtol=1e-4, atol=1e-6)
    if 0 < top_k < K:
        assert ((np.asarray(p) > 0).sum(-1) == top_k).all()


def test_residual_behaviour_term_adds_beta_h():
    h, x, e = _inputs()
    base = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16))
    res = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16, residual_weight=0.7))
    params = base.init(jax.random.key(0), h, x, deterministic=True)
    p, user = res.apply(params, h, x, deterministic=True)
    vecs = np.asarray(base.apply(params, method=lambda m: m.intent_item_vectors()))
    want = np.asarray(p) @ vecs @ np.asarray(e).T + 0.7 * np.asarray(h) @ np.asarray(e).T
    np.testing.assert_allclose(user @ e.T, want, rtol=1e-4, atol=1e-5)


def test_item_text_term_is_a_learned_scale_times_the_cosine():
    h, x, _ = _inputs()
    cfg = latentcrs.PriorConfig(text_hidden=16, text_item=True, text_item_init=2.5)
    model = latentcrs.Prior(_centroids(), cfg)
    params = model.init(jax.random.key(0), h, x, deterministic=True)
    assert float(params["params"]["text_item_log_scale"]) == 0.0  # gamma = 2.5 exp(0)
    t = np.random.default_rng(5).normal(size=(N, DX)).astype(np.float32)
    full = model.apply(params, x, jnp.asarray(t), method="text_item_scores")
    np.testing.assert_allclose(full, 2.5 * np.asarray(x) @ t.T, rtol=1e-5, atol=1e-5)
    # Per-row candidates give the same numbers as the shared table.
    cand = np.random.default_rng(6).integers(0, N, size=(B, 4))
    per_row = model.apply(params, x, jnp.asarray(t[cand]), method="text_item_scores")
    np.testing.assert_allclose(per_row, np.take_along_axis(np.asarray(full), cand, 1), rtol=1e-5)
    # Off by default: no parameter, the paper's prior.
    plain = latentcrs.Prior(_centroids(), latentcrs.PriorConfig(text_hidden=16))
    assert (
        "text_item_log_scale"
        not in plain.init(jax.random.key(0), h, x, deterministic=True)["params"]
    )
