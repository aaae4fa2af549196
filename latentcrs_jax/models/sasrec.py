"""SASRec as in ICLRec (`rec_models_cp.py:SASRecModel`), in Flax Linen.

Architecture (docs/method.md section 2.1):
* item embedding [N+1, D] (row 0 = PAD, initialised like every other row and, like PyTorch's
  `nn.Embedding(padding_idx=0)` in ICLRec, never updated through a PAD lookup: ICLRec's
  instance contrast reads the outputs at PAD positions too) + learned absolute position
  embedding [L, D]
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
Real (non-pad) positions are strictly causal. The layers are in sasrec_layers.py.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentcrs_jax.models.sasrec_layers import (
    Dropout,
    FeedForward,
    PreLNFeedForward,
    PreLNSelfAttention,
    SelfAttention,
    TFLayerNorm,
    attention_mask,
    last_block,
)

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

    def _item_rows(self, item_ids: jax.Array) -> jax.Array:
        """Item embeddings float32[B, L, D]; PAD lookups pass no gradient to row 0."""
        rows = self.item_embed(item_ids)
        return jnp.where((item_ids == 0)[..., None], jax.lax.stop_gradient(rows), rows)

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
            x = self._item_rows(item_ids) * math.sqrt(self.cfg.hidden)
            x = self.emb_dropout(x + pos, deterministic=deterministic)
            x = x * keep
            for attn, ffn in zip(self.attn[:num_blocks], self.ffn[:num_blocks]):
                x = ffn(attn(x, allowed, deterministic), deterministic) * keep
            return (self.last_ln(x) if num_blocks == self.cfg.num_layers else x), allowed
        x = self._item_rows(item_ids) + pos
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
        return last_block(self.cfg, block, x, allowed[:, 0, -1, :], rng, deterministic)

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
