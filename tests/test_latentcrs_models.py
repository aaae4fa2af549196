"""Shape and algebra tests of the LatentCRS posterior and prior networks."""

import jax
import jax.numpy as jnp
import numpy as np

from latentcrs_jax.models import latentcrs

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
