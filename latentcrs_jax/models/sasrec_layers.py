"""The layers of SASRec (`sasrec.py`) with the authors' numerics: TF-style LayerNorm, dropout
with PyTorch's keep probability from a few random bits, exact-erf GELU, the post-LN and pre-LN
attention and feed-forward blocks, the attention masks, and one block evaluated at the last
position only (user states: a third fewer FLOPs for two blocks).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from latentcrs_jax.models.sasrec import SASRecConfig


def _layer_norm(params, x: jax.Array, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias, two-pass variance (TFLayerNorm's math)."""
    u = x.mean(-1, keepdims=True)
    s = jnp.square(x - u).mean(-1, keepdims=True)
    return (x - u) / jnp.sqrt(s + eps) * params["scale"] + params["bias"]


class TFLayerNorm(nn.Module):
    """TF-style LayerNorm: (x - mean) / sqrt(var + eps) * w + b, two-pass variance."""

    eps: float = 1e-12

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        w = self.param("scale", nn.initializers.ones, (d,))
        b = self.param("bias", nn.initializers.zeros, (d,))
        return _layer_norm({"scale": w, "bias": b}, x, self.eps)


def _dropout_bits(rate: float) -> int:
    """Bits per draw: the fewest of 1, 2, 4, 8 that represent `rate` exactly, else 8."""
    for bits in (1, 2, 4):
        if (rate * 2**bits).is_integer():
            return bits
    return 8


def _dropout_threshold(rate: float) -> tuple[int, int]:
    """(bits per draw, threshold): a draw d keeps its element iff d >= threshold."""
    bits = _dropout_bits(rate)
    return bits, round(rate * 2**bits)


def dropout_keep_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """Bernoulli(1 - rate) keep mask from b-bit random draws (32 / b per random uint32).

    Random-bit generation is the dominant cost of attention dropout on CPU, so each uint32 word
    is split into 32 / b draws of b bits, with b the fewest of 1, 2, 4 bits that represent the
    rate exactly (rate 0.5: one bit per element, 32x fewer words than one word per element),
    else b = 8 and the rate is quantised to a multiple of 1/256 (0.2 -> 51/256); `Dropout`
    rescales by the quantised rate. Draw i is bits [b * (i % (32 / b)), ...) of word
    i // (32 / b) (for b = 8: the little-endian bytes of the words).

    Args:
      rng: PRNG key.
      shape: mask shape.
      rate: drop probability.

    Returns:
      bool[shape], True = keep.
    """
    bits, threshold = _dropout_threshold(rate)
    per_word = 32 // bits
    n = math.prod(shape)
    words = jax.random.bits(rng, (-(-n // per_word),), jnp.uint32)
    shifts = jnp.arange(0, 32, bits, dtype=jnp.uint32)
    draws = (words[:, None] >> shifts[None, :]) & jnp.uint32(2**bits - 1)
    return draws.reshape(-1)[:n].reshape(shape) >= jnp.uint32(threshold)


class Dropout(nn.Module):
    """Inverted dropout with `dropout_keep_mask` (rng stream "dropout")."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        if deterministic or _dropout_threshold(self.rate)[1] == 0:
            return x
        return dropout(x, self.rate, self.make_rng("dropout"))


def dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Train-mode inverted dropout of x with `dropout_keep_mask` (the quantised rate)."""
    bits, threshold = _dropout_threshold(rate)
    if threshold == 0:
        return x
    if threshold >= 2**bits:
        return jnp.zeros_like(x)
    keep = dropout_keep_mask(rng, x.shape, rate)
    scale = 2**bits / (2**bits - threshold)
    return jnp.where(keep, x * scale, 0.0).astype(x.dtype)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as ICLRec's `gelu`.

    The hand-written gradient Phi(x) + x phi(x) evaluates one erf and one exp per element;
    `jax.nn.gelu(approximate=False)` differentiates an erfc-based form whose derivative costs
    several times more on CPU (erfc expands to two branches, and the forward pass stores its
    derivative terms). Same values to float32 rounding (tested).
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


def _gelu_fwd(x):
    return gelu(x), x


def _gelu_bwd(x, g):
    cdf = 0.5 * (1.0 + jax.lax.erf(x * _SQRT_HALF))
    pdf = jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI
    return (g * (cdf + x * pdf),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _dense(cfg: SASRecConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.normal(cfg.init_range),
        bias_init=nn.initializers.zeros,
        name=name,
    )


def _multi_head_attention(
    cfg: SASRecConfig, queries: jax.Array, keys_values: jax.Array, allowed, deterministic: bool
) -> jax.Array:
    """Multi-head attention with its output projection; call inside a compact module (it
    creates the submodules query, key, value, dense and the probabilities' Dropouts).

    Args:
      cfg: backbone config (heads, dropout, `query_blocks`).
      queries: float32[B, L, D], projected to Q.
      keys_values: float32[B, L, D], projected to K and V.
      allowed: bool[B, 1, L, L] from `attention_mask`.
      deterministic: disables dropout.

    Returns:
      float32[B, L, D].
    """
    b, seq_len, d = queries.shape
    dh = d // cfg.num_heads

    def heads(t):  # [B * L, D] -> [B, H, L, dh]
        return t.reshape(b, seq_len, cfg.num_heads, dh).transpose(0, 2, 1, 3)

    q = heads(_dense(cfg, d, "query")(queries.reshape(b * seq_len, d)))
    rows = keys_values.reshape(b * seq_len, d)
    k = heads(_dense(cfg, d, "key")(rows))
    v = heads(_dense(cfg, d, "value")(rows))
    ctx = []
    for start, end in query_blocks(seq_len, min(cfg.query_blocks, seq_len // MIN_BLOCK)):
        scores = jnp.einsum("bhqd,bhkd->bhqk", q[:, :, start:end], k[:, :, :end])
        scores = masked_scores(scores / math.sqrt(dh), allowed[:, :, start:end, :end])
        probs = jax.nn.softmax(scores, axis=-1)
        probs = Dropout(cfg.attn_dropout)(probs, deterministic=deterministic)
        ctx.append(jnp.einsum("bhqk,bhkd->bhqd", probs, v[:, :, :end]))
    ctx = jnp.concatenate(ctx, axis=2) if len(ctx) > 1 else ctx[0]
    ctx = ctx.transpose(0, 2, 1, 3).reshape(b * seq_len, d)
    return _dense(cfg, d, "dense")(ctx).reshape(b, seq_len, d)


class SelfAttention(nn.Module):
    """Multi-head self-attention + dense + dropout + post-LN residual."""

    cfg: SASRecConfig

    @nn.compact
    def __call__(self, x: jax.Array, allowed: jax.Array, deterministic: bool) -> jax.Array:
        """x: float32[B, L, D]; allowed: bool[B, 1, L, L] from `attention_mask`.

        `deterministic` is positional here (not keyword-only) so that `nn.remat` can mark it
        static; the public SASRec call keeps it keyword-only.
        """
        out = _multi_head_attention(self.cfg, x, x, allowed, deterministic)
        out = Dropout(self.cfg.hidden_dropout)(out, deterministic=deterministic)
        return TFLayerNorm(self.cfg.ln_eps, name="ln")(out + x)


class PreLNSelfAttention(nn.Module):
    """The original SASRec's attention: LN(x) + MHA(query LN(x), keys and values x)."""

    cfg: SASRecConfig

    @nn.compact
    def __call__(self, x: jax.Array, allowed: jax.Array, deterministic: bool) -> jax.Array:
        """x: float32[B, L, D]; as `SelfAttention`."""
        normed = TFLayerNorm(self.cfg.ln_eps, name="ln")(x)
        return normed + _multi_head_attention(self.cfg, normed, x, allowed, deterministic)


class PreLNFeedForward(nn.Module):
    """The original SASRec's FFN: h = LN(x); h + dropout(W2 relu(dropout(W1 h)))."""

    cfg: SASRecConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """x: float32[B, L, D] -> float32[B, L, D]."""
        cfg = self.cfg
        h = TFLayerNorm(cfg.ln_eps, name="ln")(x)
        z = _dense(cfg, cfg.ffn_mult * cfg.hidden, "dense_1")(h.reshape(-1, x.shape[-1]))
        z = jax.nn.relu(Dropout(cfg.hidden_dropout)(z, deterministic=deterministic))
        z = _dense(cfg, cfg.hidden, "dense_2")(z).reshape(x.shape)
        return h + Dropout(cfg.hidden_dropout)(z, deterministic=deterministic)


class FeedForward(nn.Module):
    """Linear -> exact GELU -> Linear -> dropout -> post-LN residual."""

    cfg: SASRecConfig

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """x: float32[B, L, D] -> float32[B, L, D] (`deterministic` positional, see above)."""
        cfg = self.cfg
        h = _dense(cfg, cfg.ffn_mult * cfg.hidden, "dense_1")(x.reshape(-1, x.shape[-1]))
        h = gelu(h)
        h = _dense(cfg, cfg.hidden, "dense_2")(h).reshape(x.shape)
        h = Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
        return TFLayerNorm(cfg.ln_eps, name="ln")(h + x)


MIN_BLOCK = 50  # Fewest query positions per attention block (`SASRecConfig.query_blocks`).


def query_blocks(seq_len: int, blocks: int) -> list[tuple[int, int]]:
    """`blocks` contiguous query ranges [start, end) covering 0..seq_len, as equal as possible
    (fewer when seq_len < blocks; one when blocks < 1)."""
    blocks = max(blocks, 1)
    edges = sorted({round(seq_len * i / blocks) for i in range(blocks + 1)})
    return list(zip(edges[:-1], edges[1:]))


def attention_mask(item_ids: jax.Array) -> jax.Array:
    """Where query i may attend key j: j <= i and item j != 0.

    Args:
      item_ids: int32[B, L] left-padded item ids.

    Returns:
      bool[B, 1, L, L]. The attention adds -10000 to the scores of disallowed keys
      (`masked_scores`), as the authors' additive mask (1 - allowed) * -10000.
    """
    seq_len = item_ids.shape[1]
    causal = jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))
    return causal[None, None] & (item_ids > 0)[:, None, None, :]


def masked_scores(scores: jax.Array, allowed: jax.Array) -> jax.Array:
    """scores + (1 - allowed) * -10000, written as a select so that XLA fuses it into the
    softmax instead of materialising a broadcast float mask per head."""
    return jnp.where(allowed, scores, scores - 10000.0)


# ----------------------------------------------------------------------------------------------
# The last block at the last position only (user states: a third fewer FLOPs for two blocks).
# ----------------------------------------------------------------------------------------------


def _dense_apply(params, x: jax.Array) -> jax.Array:
    """x: float32[..., D_in] -> [..., D_out], as one 2-D matmul (the fast CPU path)."""
    rows = x.reshape(-1, x.shape[-1]) @ params["kernel"] + params["bias"]
    return rows.reshape(*x.shape[:-1], rows.shape[-1])


def _dropout(x: jax.Array, rate: float, rng, deterministic: bool) -> jax.Array:
    return x if deterministic else dropout(x, rate, rng)


def last_block(cfg: SASRecConfig, params, x, key_allowed, rng, deterministic: bool):
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
    q = _dense_apply(attn["query"], last).reshape(b, heads, dh)
    k = _dense_apply(attn["key"], x).reshape(b, seq_len, heads, dh)
    v = _dense_apply(attn["value"], x).reshape(b, seq_len, heads, dh)
    scores = jnp.einsum("bhd,blhd->bhl", q, k) / math.sqrt(dh)
    scores = masked_scores(scores, key_allowed[:, None, :])
    probs = _dropout(jax.nn.softmax(scores, axis=-1), cfg.attn_dropout, k_probs, deterministic)
    ctx = jnp.einsum("bhl,blhd->bhd", probs, v).reshape(b, d)
    out = _dropout(_dense_apply(attn["dense"], ctx), cfg.hidden_dropout, k_attn, deterministic)
    out = _layer_norm(attn["ln"], out + last, cfg.ln_eps)
    hid = gelu(_dense_apply(ffn["dense_1"], out))
    hid = _dropout(_dense_apply(ffn["dense_2"], hid), cfg.hidden_dropout, k_ffn, deterministic)
    return _layer_norm(ffn["ln"], hid + out, cfg.ln_eps)
