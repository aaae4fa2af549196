"""SASRec as in ICLRec (`rec_models_cp.py:SASRecModel`), in Flax Linen.

Architecture (docs/method.md section 2.1):
* item embedding [N+1, D] (row 0 = PAD, initialised like every other row and never updated by
  the losses because PAD positions are masked) + learned absolute position embedding [L, D]
  -> TF-style LayerNorm (eps 1e-12 inside the sqrt) -> dropout;
* `num_layers` post-LN blocks: multi-head self-attention (Q/K/V/dense Linear(D, D), scale
  1/sqrt(D/heads), additive mask (1 - key_not_pad * causal) * -10000, dropout on the
  probabilities) -> dense -> dropout -> LN(x + input); FFN Linear(D, 4D) -> exact-erf GELU ->
  Linear(4D, D) -> dropout -> LN(x + input);
* init: kernels and embeddings ~ N(0, init_range), biases 0, LayerNorm (1, 0).

Sequences are left-padded to `max_len` with 0; positions run 0..L-1 from the left, so the
last item always sits at position L-1 and the user state h_u is the output at the last position
(`positions="from_end"`, ICLRec). `positions="from_start"` numbers each row's real items
0, 1, 2, ... from its first item instead (the right-padded SASRec of the published SASRec-CE
runs), so an output at position i sees the same position ids in training as a sequence of
i + 1 items at test time.

ICLRec's item table has max_item + 2 rows; the extra last row is never used by its losses or its
evaluation, so ours has N + 1 rows.

The additive -10000 (rather than -inf) is kept on purpose: for left-pad query rows every key is
masked, the constant cancels in the softmax and those rows attend to all keys, exactly like the
authors' model. Those rows matter because ICLRec's contrastive losses pool over all L positions.
Real (non-pad) positions are strictly causal.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

BLOCKS = ("post_ln", "pre_ln")
POSITIONS = ("from_end", "from_start")


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
    """Hyperparameters of the SASRec backbone.

    Attributes:
      num_items: N; real items are 1..N, 0 is PAD.
      max_len: L, the (left-padded) input length and the number of positions.
      hidden: D.
      num_layers: Transformer blocks.
      num_heads: attention heads (D must be divisible by it).
      ffn_mult: FFN inner size = ffn_mult * D.
      hidden_dropout: dropout after embeddings, attention output and FFN.
      attn_dropout: dropout on the attention probabilities.
      init_range: std of the normal initialiser.
      ln_eps: LayerNorm epsilon (inside the sqrt).
      remat: recompute each block's activations in the backward pass (`nn.remat`) instead of
        storing them: ~1/10 of the activation memory for ~1/3 more compute. Same numbers.
      block: "post_ln", ICLRec's block (above), or "pre_ln", the original SASRec's (Kang &
        McAuley 2018, as pmixer's PyTorch port and the published SASRec-CE runs): embeddings
        scaled by sqrt(D) without LayerNorm, padding rows zeroed after the embeddings and
        every block, attention from LN(x) to x with the residual on LN(x) and no dropout
        after the output projection, FFN LN(x) -> Linear -> dropout -> ReLU -> Linear ->
        dropout (+ LN(x)), a final LayerNorm. Use it with ffn_mult 1 and ln_eps 1e-8.
      query_blocks: split the queries into up to this many position blocks (each of at least
        `MIN_BLOCK` positions: smaller ones cost more in overhead than they save); block [s, e)
        attends keys [0, e) only (the rest are causally masked), skipping the upper triangle
        (4 blocks: 62.5% of the score entries). Same outputs at real positions (up to float
        rounding); padding query rows, whose every key is masked, attend to fewer keys, so
        ICLRec's losses, which pool over all positions, need 1.
      positions: "from_end" (ICLRec): position ids by column, the last item at max_len - 1
        whatever the row's length; "from_start": each row's first real item is position 0,
        its k-th is k - 1 (padding gets 0), independent of the padding width.
    """

    num_items: int
    max_len: int = 200
    hidden: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ffn_mult: int = 4
    hidden_dropout: float = 0.5
    attn_dropout: float = 0.5
    init_range: float = 0.02
    ln_eps: float = 1e-12
    remat: bool = False
    block: str = "post_ln"
    query_blocks: int = 1
    positions: str = "from_end"

    def __post_init__(self):
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden={self.hidden} not divisible by num_heads={self.num_heads}")
        if self.num_items < 1 or self.max_len < 1:
            raise ValueError(f"need num_items >= 1 and max_len >= 1, got {self}")
        if self.query_blocks < 1:
            raise ValueError(f"query_blocks must be >= 1, got {self.query_blocks}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {self.block!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {self.positions!r}")


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


def _last_block(cfg: SASRecConfig, params, x, key_allowed, rng, deterministic: bool):
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


class SASRec(nn.Module):
    """The SASRec backbone; call it for all-position outputs."""

    cfg: SASRecConfig

    def setup(self):
        cfg = self.cfg
        init = nn.initializers.normal(cfg.init_range)
        self.item_embed = nn.Embed(cfg.num_items + 1, cfg.hidden, embedding_init=init)
        self.pos_embed = nn.Embed(cfg.max_len, cfg.hidden, embedding_init=init)
        self.emb_ln = TFLayerNorm(cfg.ln_eps)  # post_ln only
        self.last_ln = TFLayerNorm(cfg.ln_eps)  # pre_ln only
        self.emb_dropout = Dropout(cfg.hidden_dropout)
        pre = cfg.block == "pre_ln"
        attn_cls = PreLNSelfAttention if pre else SelfAttention
        ffn_cls = PreLNFeedForward if pre else FeedForward
        if cfg.remat:
            attn_cls = nn.remat(attn_cls, static_argnums=(3,))
            ffn_cls = nn.remat(ffn_cls, static_argnums=(2,))
        self.attn = [attn_cls(cfg) for _ in range(cfg.num_layers)]
        self.ffn = [ffn_cls(cfg) for _ in range(cfg.num_layers)]

    def __call__(
        self, item_ids: jax.Array, *, deterministic: bool, right_aligned: bool = False
    ) -> jax.Array:
        """All-position outputs.

        Args:
          item_ids: int32[B, L] left-padded item ids, L <= max_len.
          deterministic: disables dropout (eval mode).
          right_aligned: position ids max_len-L..max_len-1 instead of 0..L-1, i.e. exactly
            the outputs (at real positions) of the same rows left-padded to max_len, without
            computing the all-padding columns. Equal to the default when L == max_len. No
            effect with `positions="from_start"`, whose ids never depend on the width.

        Returns:
          float32[B, L, D].
        """
        return self._blocks(item_ids, deterministic, right_aligned, self.cfg.num_layers)[0]

    def _blocks(self, item_ids, deterministic: bool, right_aligned: bool, num_blocks: int):
        """Embeddings and the first `num_blocks` blocks: (float32[B, L, D], allowed mask)."""
        seq_len = item_ids.shape[1]
        if seq_len > self.cfg.max_len:
            raise ValueError(f"sequence length {seq_len} > max_len {self.cfg.max_len}")
        if self.cfg.positions == "from_start":
            real = (item_ids > 0).astype(jnp.int32)
            pos = self.pos_embed(jnp.maximum(jnp.cumsum(real, axis=1) - 1, 0))  # [B, L, D]
        else:
            first = self.cfg.max_len - seq_len if right_aligned else 0
            pos = self.pos_embed(jnp.arange(first, first + seq_len))[None]  # [1, L, D]
        allowed = attention_mask(item_ids)
        if self.cfg.block == "pre_ln":
            keep = (item_ids > 0)[..., None]
            x = self.item_embed(item_ids) * math.sqrt(self.cfg.hidden)
            x = self.emb_dropout(x + pos, deterministic=deterministic)
            x = x * keep
            for attn, ffn in zip(self.attn[:num_blocks], self.ffn[:num_blocks]):
                x = ffn(attn(x, allowed, deterministic), deterministic) * keep
            return (self.last_ln(x) if num_blocks == self.cfg.num_layers else x), allowed
        x = self.item_embed(item_ids) + pos
        x = self.emb_dropout(self.emb_ln(x), deterministic=deterministic)
        for attn, ffn in zip(self.attn[:num_blocks], self.ffn[:num_blocks]):
            x = attn(x, allowed, deterministic)
            x = ffn(x, deterministic)
        return x, allowed

    def user_state(
        self, item_ids: jax.Array, *, deterministic: bool, right_aligned: bool = False
    ) -> jax.Array:
        """h_u: the output at the last position.

        Only that output is needed, so the last block computes its keys and values at every
        position but its query, attention output and FFN at the last one (a third fewer FLOPs
        for two blocks). Equal to `__call__(...)[:, -1]` when deterministic (up to float
        summation order). With dropout, the blocks before the last draw exactly the masks of
        `__call__` with the same key; the last block draws its (smaller) masks from a key of
        its own: the same random function, another random stream.

        Args:
          item_ids: int32[B, L] left-padded item ids.
          deterministic: disables dropout.
          right_aligned: positions as if left-padded to max_len (see `__call__`).

        Returns:
          float32[B, D].
        """
        if self.cfg.block == "pre_ln":  # The whole forward (no last-block shortcut written).
            return self(item_ids, deterministic=deterministic, right_aligned=right_aligned)[:, -1]
        last = self.cfg.num_layers - 1
        x, allowed = self._blocks(item_ids, deterministic, right_aligned, last)
        params = self.variables["params"]
        block = {"attn": params[f"attn_{last}"], "ffn": params[f"ffn_{last}"]}
        rng = None if deterministic else self.make_rng("dropout")
        return _last_block(self.cfg, block, x, allowed[:, 0, -1, :], rng, deterministic)

    def item_embeddings(self) -> jax.Array:
        """The item table float32[N+1, D] (row 0 = PAD)."""
        return self.item_embed.embedding

    def score_all(
        self, item_ids: jax.Array, *, deterministic: bool = True, right_aligned: bool = False
    ) -> jax.Array:
        """h_u . e_y for every item id: float32[B, N+1] (PAD column included, unmasked)."""
        h = self.user_state(item_ids, deterministic=deterministic, right_aligned=right_aligned)
        return h @ self.item_embeddings().T


def init_params(cfg: SASRecConfig, rng: jax.Array) -> dict:
    """Initialises SASRec parameters.

    Args:
      cfg: the model config.
      rng: PRNG key.

    Returns:
      The Flax variables dict {"params": ...}.
    """
    model = SASRec(cfg)
    dummy = jnp.zeros((1, cfg.max_len), jnp.int32)
    return model.init(rng, dummy, deterministic=True)
