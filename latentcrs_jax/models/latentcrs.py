"""The LatentCRS networks (docs/method.md 3.2): posterior q(m|u) and prior p(m|u,x), p(y|m).

Shapes: d = backbone hidden size (= intent dim), K intents, N items, D_x = text dim.
Both networks take the frozen backbone's user state h_u [B, d] (computed outside, see
`training/em_data.py`) and item embeddings E [N+1, d]; each owns its own intent matrix,
initialised from the backbone's L2-normalised centroids.

Posterior: q(m|u) = softmax_m((W_q h + b_q) . (W_k c'_m + b_k) / sqrt(d));
           score_q(y) = (sum_m q_m (W_v c'_m + b_v)) . e_y.
Prior:     t = Linear(D_x -> 1024, no bias) -> Dropout -> LayerNorm -> ReLU -> Linear(-> d);
           h_mux = MLP([h; t]) (128 -> 64 -> d, ReLU after every layer, optional LayerNorm);
           p(m|u,x) = softmax_m(h_mux . c_m); s(m, y) = (W_I c_m + b_I) . e_y;
           S(u, x, y) = sum_m p_m s(m, y) = (W_I (p @ C) + b_I) . e_y.

Extensions beyond the paper (issue 18; every switch off by default, off = the paper's prior):
  sharper mixtures   p(m|u,x) = softmax_m(top_k(h_mux . c_m) / tau): `temperature` tau,
                     `top_k` keeps the k largest logits (the others get probability 0);
  residual channel   S(u, x, y) += beta h_u . e_y (`residual_weight` beta, fixed): the user
                     vector becomes W_I (p @ C) + b_I + beta h_u;
  item-text channel  S(u, x, y) += gamma cos(x, t_y) with t_y the item's text embedding and
                     gamma = `text_item_init` * exp(a) with a learned from 0 (`text_item`), so
                     text can point at item attributes and not only at intents.

`backbone_user_state` is the frozen SASRec's h_u (`SASRec.user_state`, the last block evaluated at
the last position only), what `faithful_backbone` EM steps rerun every step.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import linen as nn

from latentcrs_jax.models import sasrec, sasrec_layers
from latentcrs_jax.models.torch_init import TorchDense


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """Sizes and switches of the prior network."""

    text_hidden: int = 1024  # Width of the text projection's hidden layer.
    text_dropout: float = 0.5  # Dropout inside the text projection (authors: 0.5).
    mlp_hidden: tuple[int, ...] = (128, 64)  # Hidden widths of the fusion MLP.
    mlp_layer_norm: bool = True  # Authors' bug: their LayerNorm is never applied (7.4).
    temperature: float = 1.0  # tau of p(m|u,x) (1: the paper).
    top_k: int = 0  # Keep the k largest intent logits (0: all, the paper).
    residual_weight: float = 0.0  # beta of the residual behaviour term (0: the paper).
    text_item: bool = False  # The learned item-text term gamma cos(x, t_y) (off: the paper).
    text_item_init: float = 1.0  # Initial gamma.


def _init_from(values: jax.Array):
    def init(key, shape, dtype=jnp.float32):
        del key
        assert tuple(shape) == tuple(values.shape), (shape, values.shape)
        return jnp.asarray(values, dtype)

    return init


class PackedDropout(nn.Module):
    """Inverted dropout from packed random bits where that is exact.

    For a rate that is a multiple of 1/256 (0.5 included) the keep mask is
    `sasrec_layers.dropout_keep_mask` (Bernoulli(1 - rate) exactly, several draws per random uint32
    instead of `nn.Dropout`'s one uint32 per element: random-bit generation is the dominant
    cost of the text projection's dropout on CPU); any other rate falls back to `nn.Dropout`,
    so the rate is never quantised.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        """x: float32[...] -> float32[...] (x itself when `deterministic` or rate 0)."""
        if deterministic or self.rate == 0.0:
            return x
        if self.rate >= 1.0 or self.rate * 256 != round(self.rate * 256):
            return nn.Dropout(self.rate)(x, deterministic=False)
        keep = sasrec_layers.dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


class Posterior(nn.Module):
    """q(m|u): attention of the behaviour state over the posterior's own intents."""

    intents_init: jax.Array  # float32[K, d] initial intent matrix (centroids).

    def setup(self):
        k, d = self.intents_init.shape
        self.intents = self.param("intents", _init_from(self.intents_init), (k, d))
        self.query = TorchDense(d, name="query")
        self.key = TorchDense(d, name="key")
        self.value = TorchDense(d, name="value")

    def distribution(self, h: jax.Array) -> jax.Array:
        """q(m|u): h float32[B, d] -> probabilities float32[B, K]."""
        d = h.shape[-1]
        logits = self.query(h) @ self.key(self.intents).T / jnp.sqrt(d)
        return jax.nn.softmax(logits, axis=-1)

    def user_vector(self, q: jax.Array) -> jax.Array:
        """sum_m q_m (W_v c'_m + b_v): q float32[B, K] -> float32[B, d]."""
        return q @ self.value(self.intents)

    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns (q [B, K], the user vector [B, d] scored against item embeddings)."""
        q = self.distribution(h)
        return q, self.user_vector(q)


class Prior(nn.Module):
    """p(m|u,x) from behaviour and text, and the item-given-intent score s(m, y)."""

    intents_init: jax.Array  # float32[K, d] initial intent matrix (centroids).
    config: PriorConfig = PriorConfig()

    def setup(self):
        k, d = self.intents_init.shape
        cfg = self.config
        self.intents = self.param("intents", _init_from(self.intents_init), (k, d))
        self.text_in = TorchDense(cfg.text_hidden, use_bias=False, name="text_in")
        self.text_dropout = PackedDropout(cfg.text_dropout)
        self.text_norm = nn.LayerNorm(epsilon=1e-5, name="text_norm")
        self.text_out = TorchDense(d, name="text_out")
        widths = (*cfg.mlp_hidden, d)
        self.mlp = [TorchDense(w, name=f"mlp_{j}") for j, w in enumerate(widths)]
        self.mlp_norms = [
            nn.LayerNorm(epsilon=1e-5, name=f"mlp_norm_{j}") for j in range(len(widths))
        ]
        self.item_intent = TorchDense(d, name="item_intent")  # W_I, b_I (`linear_intent`)
        if cfg.text_item:  # gamma = text_item_init * exp(a), a learned from 0 (moves by factors)
            self.text_item_log_scale = self.param(
                "text_item_log_scale", lambda key: jnp.zeros((), jnp.float32)
            )

    def text_projection(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        """x float32[B, D_x] -> t float32[B, d]."""
        t = self.text_in(x)
        t = self.text_dropout(t, deterministic=deterministic)
        t = nn.relu(self.text_norm(t))
        return self.text_out(t)

    def distribution(self, h: jax.Array, x: jax.Array, *, deterministic: bool) -> jax.Array:
        """p(m|u,x): h float32[B, d], x float32[B, D_x] -> float32[B, K]."""
        z = jnp.concatenate([h, self.text_projection(x, deterministic=deterministic)], -1)
        for dense, norm in zip(self.mlp, self.mlp_norms):
            z = dense(z)
            if self.config.mlp_layer_norm:
                z = norm(z)
            z = nn.relu(z)
        return sharpened_softmax(z @ self.intents.T, self.config.temperature, self.config.top_k)

    def text_item_scores(self, x: jax.Array, item_text: jax.Array) -> jax.Array:
        """gamma x . t_y: x float32[B, D_x]; item_text float32[M, D_x] (shared) or
        float32[B, M, D_x] (per row) -> float32[B, M]. Needs `config.text_item`."""
        gamma = self.config.text_item_init * jnp.exp(self.text_item_log_scale)
        if item_text.ndim == 2:
            return gamma * (x @ item_text.T)
        return gamma * jnp.einsum("bx,bmx->bm", x, item_text)

    def intent_item_vectors(self) -> jax.Array:
        """W_I c_m + b_I for every intent: float32[K, d]."""
        return self.item_intent(self.intents)

    def mixture_vector(self, p: jax.Array) -> jax.Array:
        """W_I (p @ C) + b_I = sum_m p_m (W_I c_m + b_I) (as sum_m p_m = 1): float32[B, d]."""
        return self.item_intent(p @ self.intents)

    def __call__(self, h, x, *, deterministic: bool):
        """Returns (p [B, K], the user vector [B, d]: the mixture (+ beta h_u))."""
        p = self.distribution(h, x, deterministic=deterministic)
        user = self.mixture_vector(p)
        if self.config.residual_weight:
            user = user + self.config.residual_weight * h
        return p, user


def sharpened_softmax(logits: jax.Array, temperature: float = 1.0, top_k: int = 0) -> jax.Array:
    """softmax(logits / temperature) over the `top_k` largest logits of each row (all when 0;
    ties with the k-th value are kept): float32[B, K] -> float32[B, K]."""
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    return jax.nn.softmax(logits, axis=-1)


# ----------------------------------------------------------------------------------------------
# The frozen backbone's user state, last block at the last position only.
# ----------------------------------------------------------------------------------------------


def backbone_user_state(
    cfg: sasrec.SASRecConfig,
    variables,
    item_ids: jax.Array,
    *,
    deterministic: bool,
    rng: jax.Array | None = None,
) -> jax.Array:
    """The frozen backbone's h_u (`SASRec.user_state`: last block at the last position only).

    Args:
      cfg: backbone config.
      variables: the backbone's Flax variables.
      item_ids: int32[B, L] left-padded item ids (positions 0..L-1, as `SASRec.__call__`).
      deterministic: disables dropout.
      rng: PRNG key of the "dropout" stream (needed unless `deterministic`).

    Returns:
      float32[B, D].
    """
    rngs = {} if deterministic else {"dropout": rng}
    return sasrec.SASRec(cfg).apply(
        variables, item_ids, deterministic=deterministic, method=sasrec.SASRec.user_state, rngs=rngs
    )
