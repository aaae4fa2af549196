"""E-step and M-step losses of LatentCRS (docs/method.md 3.3), as pure functions.

Notation per sample b: q_b = q(.|u_b) in the simplex over K intents; p_b = p(.|u_b, x_b);
candidates Y_b = [y+, y-_1..y-_n] (column 0 is the positive); s(m, y) the item-given-intent
score; logs use eps = 1e-5 as the authors: log(a + 1e-5).
"""

import jax
import jax.numpy as jnp

EPS = 1e-5


def kl_divergence(q: jax.Array, p: jax.Array, eps: float = EPS) -> jax.Array:
    """Mean over b of KL(q_b || p_b) = sum_m q [log(q + eps) - log(p + eps)].

    Args:
      q: float32[B, K], rows on the simplex.
      p: float32[B, K], rows on the simplex.
    """
    return jnp.mean(jnp.sum(q * (jnp.log(q + eps) - jnp.log(p + eps)), axis=-1))


def entropy(p: jax.Array, eps: float = EPS) -> jax.Array:
    """Mean over b of H(p_b) = -sum_m p log(p + eps): p float32[B, K] on the simplex."""
    return jnp.mean(-jnp.sum(p * jnp.log(p + eps), axis=-1))


def e_step_target(
    prior: jax.Array,
    positive_scores: jax.Array,
    log_normaliser: jax.Array | None = None,
    *,
    bayes: bool = True,
) -> jax.Array:
    """The E-step's target posterior over intents, p~_b(m).

    Args:
      prior: p(m|u,x), float32[B, K].
      positive_scores: s(m, y+_b), float32[B, K].
      log_normaliser: log sum_y exp s(m, y) over all items, float32[K]; needed when `bayes`.
      bayes: True: p~ proportional to p(y+|m) p(m|u,x) with p(y|m) = softmax_y s(m, y), i.e.
        softmax_m(s(m, y+) - log Z_m + log p(m|u,x)). False: the authors'
        softmax_m(s(m, y+) * p(m|u,x)) (docs/method.md 7.5).

    Returns:
      float32[B, K], rows on the simplex.
    """
    if not bayes:
        return jax.nn.softmax(positive_scores * prior, axis=-1)
    log_lik = positive_scores - log_normaliser[None, :]
    return jax.nn.softmax(log_lik + jnp.log(prior + 1e-30), axis=-1)


def sampled_softmax_ce(logits: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Mean over rows of -log softmax(logits / temperature)[0] (column 0 is the positive).

    Args:
      logits: float32[..., 1 + n] scores of the positive and n negatives.
    """
    return -jnp.mean(jax.nn.log_softmax(logits / temperature, axis=-1)[..., 0])


def intent_infonce(
    prior: jax.Array,
    q: jax.Array,
    candidate_scores: jax.Array,
    temperature: float = 1.0,
    *,
    faithful: bool = False,
) -> jax.Array:
    """Per-intent InfoNCE of the M-step.

    Args:
      prior: p(m|u,x), float32[B, K].
      q: q(m|u), float32[B, K] (a constant in the M-step).
      candidate_scores: s(m, y) for y in Y_b, float32[B, K, 1 + n].
      temperature: divides the logits (corrected mode).
      faithful: the authors' form (docs/method.md 7.6): CE_m over logits p_b(m) * s(m, y), then the
        mean over b and m of q_b(m) CE_m (a 1/K factor). Otherwise CE_m over s(m, y) / T and
        the q-weighted sum over m, averaged over b: E_q[-log p(y+ | m, Y_b)].

    Returns:
      scalar loss.
    """
    if faithful:
        logits = prior[..., None] * candidate_scores
        ce = -jax.nn.log_softmax(logits, axis=-1)[..., 0]  # [B, K]
        return jnp.mean(q * ce)
    ce = -jax.nn.log_softmax(candidate_scores / temperature, axis=-1)[..., 0]
    return jnp.mean(jnp.sum(q * ce, axis=-1))


def e_step_loss(
    q: jax.Array,
    target: jax.Array,
    posterior_logits: jax.Array,
    *,
    kl_weight: float,
    rank_weight: float,
    temperature: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_E = kl_weight * KL(q || p~) + rank_weight * CE(score_q(Y_b) / T).

    Args:
      q: posterior, float32[B, K] (trained).
      target: p~, float32[B, K] (constant: the prior is fixed in the E-step).
      posterior_logits: score_q over the candidates, float32[B, 1 + n].
    """
    kl = kl_divergence(q, jax.lax.stop_gradient(target))
    rank = sampled_softmax_ce(posterior_logits, temperature)
    total = kl_weight * kl + rank_weight * rank
    return total, {"kl": kl, "rank": rank, "loss": total}


def m_step_loss(
    q: jax.Array,
    prior: jax.Array,
    candidate_scores: jax.Array,
    mixture_logits: jax.Array,
    *,
    kl_weight: float,
    nce_weight: float,
    rec_weight: float,
    temperature: float = 1.0,
    faithful_nce: bool = False,
    entropy_weight: float = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L_M = kl_weight * KL(q || p) + nce_weight * L_NCE + rec_weight * CE(S(u, x, Y_b) / T)
    + entropy_weight * H(p) (a positive weight sharpens p; 0 is the paper).

    Args:
      q: posterior, float32[B, K] (constant in the M-step).
      prior: p(m|u,x), float32[B, K] (trained).
      candidate_scores: s(m, y) on the candidates, float32[B, K, 1 + n].
      mixture_logits: S(u, x, y) on the candidates, float32[B, 1 + n].
    """
    q = jax.lax.stop_gradient(q)
    kl = kl_divergence(q, prior)
    terms = {"kl": kl}
    total = kl_weight * kl
    if nce_weight:
        nce = intent_infonce(prior, q, candidate_scores, temperature, faithful=faithful_nce)
        terms["nce"] = nce
        total = total + nce_weight * nce
    rec = sampled_softmax_ce(mixture_logits, temperature)
    terms["rec"] = rec
    total = total + rec_weight * rec
    if entropy_weight:
        terms["entropy"] = entropy(prior)
        total = total + entropy_weight * terms["entropy"]
    terms["loss"] = total
    return total, terms
