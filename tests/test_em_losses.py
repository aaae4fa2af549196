"""EM losses against numpy closed forms: values and gradients on tiny arrays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.losses import em

RNG = np.random.default_rng(0)
EPS = 1e-5


def _simplex(b, k):
    x = RNG.normal(size=(b, k))
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


def test_kl_matches_numpy_and_is_zero_on_equal():
    q, p = _simplex(3, 5), _simplex(3, 5)
    expected = np.mean(np.sum(q * (np.log(q + EPS) - np.log(p + EPS)), -1))
    np.testing.assert_allclose(em.kl_divergence(jnp.array(q), jnp.array(p)), expected, rtol=1e-5)
    assert abs(float(em.kl_divergence(jnp.array(q), jnp.array(q)))) < 1e-6


def test_kl_gradient_wrt_p():
    q, p = _simplex(2, 4), _simplex(2, 4)
    f = lambda pp: np.mean(np.sum(q * (np.log(q + EPS) - np.log(pp + EPS)), -1))
    g = jax.grad(lambda pp: em.kl_divergence(jnp.array(q), pp))(jnp.array(p))
    np.testing.assert_allclose(g, _numeric_grad(f, p.astype(np.float64)), rtol=1e-3, atol=1e-5)


def test_e_step_target_authors_form():
    p, s = _simplex(3, 6), RNG.normal(size=(3, 6))
    out = em.e_step_target(jnp.array(p), jnp.array(s), bayes=False)
    np.testing.assert_allclose(out, _softmax(s * p), rtol=1e-5)


def test_e_step_target_is_bayes_posterior():
    # K = 3 intents, N = 4 items: p(y|m) = softmax_y s(m, y); p~(m) = p(y+|m) p(m) / Z.
    k, n = 3, 4
    s_all = RNG.normal(size=(k, n))
    prior = _simplex(2, k)
    y_pos = np.array([1, 3])
    lik = _softmax(s_all)[:, y_pos].T  # [B, K]
    expected = lik * prior / (lik * prior).sum(-1, keepdims=True)
    log_z = np.log(np.exp(s_all).sum(-1))
    out = em.e_step_target(
        jnp.array(prior), jnp.array(s_all[:, y_pos].T), jnp.array(log_z), bayes=True
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampled_softmax_ce(temperature):
    z = RNG.normal(size=(4, 11))
    expected = -np.mean(_log_softmax(z / temperature)[:, 0])
    np.testing.assert_allclose(em.sampled_softmax_ce(jnp.array(z), temperature), expected, 1e-5)
    g = jax.grad(lambda zz: em.sampled_softmax_ce(zz, temperature))(jnp.array(z))
    expected_g = (_softmax(z / temperature) - np.eye(11)[0]) / temperature / 4
    np.testing.assert_allclose(g, expected_g, rtol=1e-4, atol=1e-6)


def test_intent_infonce_corrected_and_faithful():
    b, k, c = 3, 4, 5
    p, q = _simplex(b, k), _simplex(b, k)
    s = RNG.normal(size=(b, k, c))
    ce = -_log_softmax(s / 0.7)[..., 0]
    expected = np.mean(np.sum(q * ce, -1))
    out = em.intent_infonce(jnp.array(p), jnp.array(q), jnp.array(s), 0.7)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    ce_f = -_log_softmax(p[..., None] * s)[..., 0]
    out_f = em.intent_infonce(jnp.array(p), jnp.array(q), jnp.array(s), faithful=True)
    np.testing.assert_allclose(out_f, np.mean(q * ce_f), rtol=1e-5)
    # The faithful form is the corrected one (T = 1) scaled by ~1/K only when p is uniform.
    uniform = np.full((b, k), 1.0 / k)
    ce_u = -_log_softmax(s / k)[..., 0]
    out_u = em.intent_infonce(jnp.array(uniform), jnp.array(q), jnp.array(s), faithful=True)
    np.testing.assert_allclose(out_u, np.sum(q * ce_u, -1).mean() / k, rtol=1e-5)


def test_e_step_loss_total_and_stop_gradient():
    q, target = _simplex(2, 3), _simplex(2, 3)
    logits = RNG.normal(size=(2, 6))
    total, terms = em.e_step_loss(
        jnp.array(q), jnp.array(target), jnp.array(logits), kl_weight=1.0, rank_weight=5.0
    )
    kl = np.mean(np.sum(q * (np.log(q + EPS) - np.log(target + EPS)), -1))
    rank = -np.mean(_log_softmax(logits)[:, 0])
    np.testing.assert_allclose(total, kl + 5 * rank, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-5)
    # The target is a constant: no gradient flows into it.
    g = jax.grad(
        lambda t: em.e_step_loss(
            jnp.array(q), t, jnp.array(logits), kl_weight=1.0, rank_weight=5.0
        )[0]
    )(jnp.array(target))
    assert not np.any(np.asarray(g))


def test_m_step_loss_total_and_q_constant():
    b, k, c = 2, 3, 4
    q, p = _simplex(b, k), _simplex(b, k)
    s = RNG.normal(size=(b, k, c))
    mix = RNG.normal(size=(b, c))
    args = (jnp.array(q), jnp.array(p), jnp.array(s), jnp.array(mix))
    total, terms = em.m_step_loss(*args, kl_weight=1.0, nce_weight=2.0, rec_weight=5.0)
    kl = np.mean(np.sum(q * (np.log(q + EPS) - np.log(p + EPS)), -1))
    nce = np.mean(np.sum(q * -_log_softmax(s)[..., 0], -1))
    rec = -np.mean(_log_softmax(mix)[:, 0])
    np.testing.assert_allclose(total, kl + 2 * nce + 5 * rec, rtol=1e-5)
    assert set(terms) == {"kl", "nce", "rec", "loss"}
    _, terms0 = em.m_step_loss(*args, kl_weight=1.0, nce_weight=0.0, rec_weight=5.0)
    assert "nce" not in terms0
    g = jax.grad(
        lambda qq: em.m_step_loss(qq, *args[1:], kl_weight=1.0, nce_weight=2.0, rec_weight=5.0)[0]
    )(args[0])
    assert not np.any(np.asarray(g))


def test_entropy_term_of_the_m_step_matches_numpy_and_sharpens():
    b, k, c = 3, 5, 4
    q, p = _simplex(b, k), _simplex(b, k)
    args = (jnp.array(q), jnp.array(p), None, jnp.array(RNG.normal(size=(b, c))))
    weights = dict(kl_weight=1.0, nce_weight=0.0, rec_weight=5.0)
    base, _ = em.m_step_loss(*args, **weights)
    total, terms = em.m_step_loss(*args, **weights, entropy_weight=0.3)
    h = np.mean(-np.sum(p * np.log(p + EPS), -1))
    np.testing.assert_allclose(terms["entropy"], h, rtol=1e-5)
    np.testing.assert_allclose(total, base + 0.3 * h, rtol=1e-5)
    np.testing.assert_allclose(em.entropy(jnp.full((2, 4), 0.25)), np.log(4), rtol=1e-4)
    # Its gradient w.r.t. p matches the closed form -(log(p + eps) + p / (p + eps)).
    g = jax.grad(lambda pp: em.entropy(pp))(jnp.array(p))
    np.testing.assert_allclose(g, -(np.log(p + EPS) + p / (p + EPS)) / b, rtol=1e-4)
