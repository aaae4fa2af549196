"""The LatentCRS networks (method.md 3.2): posterior q(m|u) and prior p(m|u,x), p(y|m).

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

`backbone_user_state` is the frozen SASRec's h_u computed with the last block evaluated at the
last position only (what `faithful_backbone` EM steps rerun every step).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from latentcrs_jax.models import sasrec
from latentcrs_jax.models.torch_init import TorchDense


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """Sizes and switches of the prior network."""

    text_hidden: int = 1024  # Width of the text projection's hidden layer.
    text_dropout: float = 0.5  # Dropout inside the text projection (authors: 0.5).
    mlp_hidden: tuple[int, ...] = (128, 64)  # Hidden widths of the fusion MLP.
    mlp_layer_norm: bool = True  # Authors' bug: their LayerNorm is never applied (7.4).


def _init_from(values: jax.Array):
    def init(key, shape, dtype=jnp.float32):
        del key
        assert tuple(shape) == tuple(values.shape), (shape, values.shape)
        return jnp.asarray(values, dtype)

    return init


class PackedDropout(nn.Module):
    """Inverted dropout from packed random bits where that is exact.

    For a rate that is a multiple of 1/256 (0.5 included) the keep mask is
    `sasrec.dropout_keep_mask` (Bernoulli(1 - rate) exactly, several draws per random uint32
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
        keep = sasrec.dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
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
        return jax.nn.softmax(z @ self.intents.T, axis=-1)

    def intent_item_vectors(self) -> jax.Array:
        """W_I c_m + b_I for every intent: float32[K, d]."""
        return self.item_intent(self.intents)

    def mixture_vector(self, p: jax.Array) -> jax.Array:
        """W_I (p @ C) + b_I = sum_m p_m (W_I c_m + b_I) (as sum_m p_m = 1): float32[B, d]."""
        return self.item_intent(p @ self.intents)

    def __call__(self, h, x, *, deterministic: bool):
        """Returns (p [B, K], the mixture user vector [B, d])."""
        p = self.distribution(h, x, deterministic=deterministic)
        return p, self.mixture_vector(p)


# ----------------------------------------------------------------------------------------------
# The frozen backbone's user state, last block at the last position only.
# ----------------------------------------------------------------------------------------------


def _layer_norm(params, x: jax.Array, eps: float) -> jax.Array:
    """sasrec.TFLayerNorm with its params {"scale", "bias"}."""
    u = x.mean(-1, keepdims=True)
    s = jnp.square(x - u).mean(-1, keepdims=True)
    return (x - u) / jnp.sqrt(s + eps) * params["scale"] + params["bias"]


def _dense(params, x: jax.Array) -> jax.Array:
    """x: float32[..., D_in] -> [..., D_out], as one 2-D matmul (the fast CPU path)."""
    rows = x.reshape(-1, x.shape[-1]) @ params["kernel"] + params["bias"]
    return rows.reshape(*x.shape[:-1], rows.shape[-1])


def _dropout(x: jax.Array, rate: float, rng, deterministic: bool) -> jax.Array:
    """sasrec.Dropout (same quantised rate and rescaling) with an explicit key."""
    if deterministic:
        return x
    return sasrec.Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": rng})


def _last_block(cfg: sasrec.SASRecConfig, params, x, key_allowed, rng, deterministic: bool):
    """One SASRec block (attention + FFN) evaluated for the last query position only.

    Args:
      cfg: backbone config.
      params: {"attn": SelfAttention params, "ffn": FeedForward params}.
      x: float32[B, L, D] input of the block (all positions: keys and values).
      key_allowed: bool[B, L] keys the last query may attend (`attention_mask`'s last row).
      rng: PRNG key for the block's dropout (ignored when `deterministic`).
      deterministic: disables dropout.

    Returns:
      float32[B, D], the block's output at position L - 1.
    """
    attn, ffn = params["attn"], params["ffn"]
    b, seq_len, d = x.shape
    heads, dh = cfg.num_heads, d // cfg.num_heads
    k_probs, k_attn, k_ffn = jax.random.split(rng, 3) if rng is not None else (None,) * 3
    last = x[:, -1]
    q = _dense(attn["query"], last).reshape(b, heads, dh)
    k = _dense(attn["key"], x).reshape(b, seq_len, heads, dh)
    v = _dense(attn["value"], x).reshape(b, seq_len, heads, dh)
    scores = jnp.einsum("bhd,blhd->bhl", q, k) / math.sqrt(dh)
    scores = sasrec.masked_scores(scores, key_allowed[:, None, :])
    probs = _dropout(jax.nn.softmax(scores, axis=-1), cfg.attn_dropout, k_probs, deterministic)
    ctx = jnp.einsum("bhl,blhd->bhd", probs, v).reshape(b, d)
    out = _dropout(_dense(attn["dense"], ctx), cfg.hidden_dropout, k_attn, deterministic)
    out = _layer_norm(attn["ln"], out + last, cfg.ln_eps)
    hid = sasrec.gelu(_dense(ffn["dense_1"], out))
    hid = _dropout(_dense(ffn["dense_2"], hid), cfg.hidden_dropout, k_ffn, deterministic)
    return _layer_norm(ffn["ln"], hid + out, cfg.ln_eps)


def backbone_user_state(
    cfg: sasrec.SASRecConfig,
    variables,
    item_ids: jax.Array,
    *,
    deterministic: bool,
    rng: jax.Array | None = None,
) -> jax.Array:
    """h_u = SASRec(item_ids)[:, -1] without computing the last block at the other positions.

    Only the last position's output is used, so the last block needs its keys and values at
    every position but its query, attention output and FFN at the last one: about 40% fewer
    FLOPs for two blocks. Equal to `SASRec.user_state` when deterministic (up to float
    summation order). With dropout, the blocks before the last draw exactly the masks of
    `SASRec.user_state` with the same key; the last block draws its (smaller) masks from a key
    of its own, so it is the same random function with a different random stream.

    Args:
      cfg: backbone config.
      variables: the backbone's Flax variables.
      item_ids: int32[B, L] left-padded item ids (positions 0..L-1, as `SASRec.__call__`).
      deterministic: disables dropout.
      rng: PRNG key of the "dropout" stream (needed unless `deterministic`).

    Returns:
      float32[B, D].
    """
    model = sasrec.SASRec(cfg)
    last = cfg.num_layers - 1

    def run(m, ids):
        seq_len = ids.shape[1]
        if seq_len > cfg.max_len:
            raise ValueError(f"sequence length {seq_len} > max_len {cfg.max_len}")
        x = m.item_embed(ids) + m.pos_embed(jnp.arange(seq_len))[None]
        x = m.emb_dropout(m.emb_ln(x), deterministic=deterministic)
        allowed = sasrec.attention_mask(ids)
        for attn, ffn in zip(m.attn[:last], m.ffn[:last]):
            x = attn(x, allowed, deterministic)
            x = ffn(x, deterministic)
        params = {"attn": m.variables["params"][f"attn_{last}"]}
        params["ffn"] = m.variables["params"][f"ffn_{last}"]
        block_rng = None if deterministic else m.make_rng("dropout")
        return _last_block(cfg, params, x, allowed[:, 0, -1, :], block_rng, deterministic)

    rngs = {} if deterministic else {"dropout": rng}
    return model.apply(variables, item_ids, method=run, rngs=rngs)
