"""Flax (Linen) BERT encoder with sentence-transformers pooling.

A port of Hugging Face `BertModel` for inference: word + position + token-type embeddings with
LayerNorm, post-LN encoder layers (self-attention, exact-erf GELU feed-forward), additive
attention masking. `SentenceEncoder` adds what sentence-transformers does on top (mean pooling
over the attention mask, then L2 normalisation). Module and parameter names mirror the Hugging
Face ones, so `weights.py` maps a checkpoint onto the tree name by name.

The encoder is frozen in this project, so there is no dropout. All computation is float32 and
matmuls run at `highest` precision by default, so GPUs/TPUs do not silently drop to TF32/bf16.
"""

import dataclasses
import json
import os
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentcrs_jax.text.errors import TextFileNotFoundError, TextInputError

# Activation names of Hugging Face configs that this port implements.
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # Exact erf GELU (HF "gelu").
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT encoder (the fields of a Hugging Face `config.json`)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(
                f"hidden_act {self.hidden_act!r} is not supported; use one of "
                f"{sorted(_ACTIVATIONS)}"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, hf: dict[str, Any]) -> "BertConfig":
        """Builds the config from a parsed Hugging Face `config.json` (unknown keys ignored).

        Raises:
            ValueError: for a model type or position embedding this port does not implement.
        """
        model_type = hf.get("model_type", "bert")
        if model_type != "bert":
            raise ValueError(f"model_type {model_type!r} is not supported (only 'bert')")
        position_type = hf.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(f"position_embedding_type {position_type!r} is not supported")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(hf))
        if missing:
            raise ValueError(f"config.json lacks the fields {missing}")
        return cls(**{name: hf[name] for name in fields})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """Reads a Hugging Face `config.json`.

        Raises:
            FileNotFoundError: naming the file when it is absent.
            ValueError: naming the file when it is not valid JSON or not a BERT config.
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise TextFileNotFoundError(f"BERT config file not found: {path}")
        try:
            hf = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TextInputError(f"{path} is not valid JSON: {e}") from e
        if not isinstance(hf, dict):
            raise TextInputError(f"{path} does not hold a JSON object")
        try:
            return cls.from_dict(hf)
        except (TypeError, ValueError) as e:
            raise TextInputError(f"{path}: {e}") from e


def _layer_norm(config: BertConfig) -> nn.LayerNorm:
    """HF-style LayerNorm: two-pass variance as PyTorch (flax's fast variance is E[x^2]-E[x]^2)."""
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name="LayerNorm")


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        """Embeds tokens.

        Args:
            input_ids: int32[B, L] token ids.
            token_type_ids: int32[B, L] segment ids (0 for single sentences).

        Returns:
            float32[B, L, H] embeddings.
        """
        cfg = self.config
        length = input_ids.shape[1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings "
                f"{cfg.max_position_embeddings}"
            )
        word = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
        position = nn.Embed(
            cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings"
        )(jnp.arange(length)[None, :])
        token_type = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(
            token_type_ids
        )
        x = word + position + token_type
        return _layer_norm(cfg)(x)


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (HF `BertSelfAttention`)."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, attention_bias: jax.Array) -> jax.Array:
        """Attends over the sequence.

        Args:
            x: float32[B, L, H] hidden states.
            attention_bias: float32[B, 1, 1, L] 0 for real keys, a huge negative for padding.

        Returns:
            float32[B, L, H] per-head contexts, heads concatenated.
        """
        cfg = self.config
        batch, length, _ = x.shape
        shape = (batch, length, cfg.num_attention_heads, cfg.head_dim)
        dense = lambda name: nn.Dense(cfg.hidden_size, precision=self.precision, name=name)
        # Heads-major [B, N, L, Dh] layout: XLA:CPU runs these batched matmuls ~3x faster than
        # einsums with the head axis in the middle.
        q, k, v = (
            dense(name)(x).reshape(shape).transpose(0, 2, 1, 3)
            for name in ("query", "key", "value")
        )
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=self.precision)
        scores = scores / jnp.sqrt(jnp.float32(cfg.head_dim)) + attention_bias
        probs = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs, v, precision=self.precision)
        context = context.transpose(0, 2, 1, 3)
        return context.reshape(batch, length, cfg.hidden_size)


class BertDenseLayerNorm(nn.Module):
    """Projection, residual add, LayerNorm (HF `BertSelfOutput` / `BertOutput`)."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, residual: jax.Array) -> jax.Array:
        """Projects `x` to the hidden size and normalises `x + residual`.

        Args:
            x: float32[B, L, F] branch output.
            residual: float32[B, L, H] branch input.

        Returns:
            float32[B, L, H] new hidden states.
        """
        cfg = self.config
        x = nn.Dense(cfg.hidden_size, precision=self.precision, name="dense")(x)
        return _layer_norm(cfg)(x + residual)


class BertAttention(nn.Module):
    """Self-attention block with its output projection (HF `BertAttention`)."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, attention_bias: jax.Array) -> jax.Array:
        """Args: x: float32[B, L, H]; attention_bias: float32[B, 1, 1, L]. Returns [B, L, H]."""
        context = BertSelfAttention(self.config, self.precision, name="self")(x, attention_bias)
        return BertDenseLayerNorm(self.config, self.precision, name="output")(context, x)


class BertIntermediate(nn.Module):
    """Feed-forward expansion with the configured activation (HF `BertIntermediate`)."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Args: x: float32[B, L, H]. Returns float32[B, L, I]."""
        cfg = self.config
        x = nn.Dense(cfg.intermediate_size, precision=self.precision, name="dense")(x)
        return _ACTIVATIONS[cfg.hidden_act](x)


class BertLayer(nn.Module):
    """One post-LN Transformer layer: attention, then the feed-forward block."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, attention_bias: jax.Array) -> jax.Array:
        """Args: x: float32[B, L, H]; attention_bias: float32[B, 1, 1, L]. Returns [B, L, H]."""
        x = BertAttention(self.config, self.precision, name="attention")(x, attention_bias)
        inter = BertIntermediate(self.config, self.precision, name="intermediate")(x)
        return BertDenseLayerNorm(self.config, self.precision, name="output")(inter, x)


class BertEncoder(nn.Module):
    """The stack of `num_hidden_layers` layers (HF `BertEncoder`)."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, x: jax.Array, attention_bias: jax.Array) -> jax.Array:
        """Args: x: float32[B, L, H]; attention_bias: float32[B, 1, 1, L]. Returns [B, L, H]."""
        for i in range(self.config.num_hidden_layers):
            x = BertLayer(self.config, self.precision, name=f"layer_{i}")(x, attention_bias)
        return x


class BertModel(nn.Module):
    """BERT encoder returning the last hidden states (HF `BertModel` without the pooler)."""

    config: BertConfig
    precision: str | None = "highest"

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Encodes a padded batch.

        Args:
            input_ids: int32[B, L] token ids (any id where the mask is 0).
            attention_mask: int32[B, L] 1 for real tokens, 0 for padding.
            token_type_ids: int32[B, L] segment ids; None means all zeros.

        Returns:
            float32[B, L, H] last hidden states (padding positions hold values nobody uses).
        """
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = BertEmbeddings(self.config, name="embeddings")(input_ids, token_type_ids)
        # HF adds finfo(float32).min to masked scores; exp() of it underflows to exactly 0.
        keep = attention_mask[:, None, None, :].astype(bool)
        attention_bias = jnp.where(keep, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
        return BertEncoder(self.config, self.precision, name="encoder")(x, attention_bias)


def mean_pool(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean of token states over the attention mask (sentence-transformers `Pooling`).

    Args:
        hidden: float32[B, L, H] token states.
        attention_mask: int32[B, L] 1 for real tokens, 0 for padding.

    Returns:
        float32[B, H]; an all-padding row gives zeros (the count is clamped at 1e-9).
    """
    mask = attention_mask.astype(hidden.dtype)[:, :, None]
    summed = jnp.sum(hidden * mask, axis=1)
    count = jnp.maximum(jnp.sum(mask, axis=1), 1e-9)
    return summed / count


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Row-wise L2 normalisation as `torch.nn.functional.normalize` (norm clamped at eps).

    Args:
        x: float32[B, H] vectors.
        eps: lower bound of the norm, so zero rows stay zero.

    Returns:
        float32[B, H] unit rows (zero rows stay zero).
    """
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, eps)


class SentenceEncoder(nn.Module):
    """BERT + pooling (+ L2 normalisation): one embedding per sentence, as sentence-transformers.

    Attributes:
        config: the BERT architecture.
        pooling: "mean" (mean over the mask) or "cls" (the first token's state).
        normalize: L2-normalise the pooled vector (the `Normalize` module).
        precision: matmul precision passed to every Dense/einsum.
    """

    config: BertConfig
    pooling: str = "mean"
    normalize: bool = True
    precision: str | None = "highest"

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """Embeds a right-padded batch of tokenised sentences.

        Args:
            input_ids: int32[B, L] token ids.
            attention_mask: int32[B, L] 1 for real tokens, 0 for padding.

        Returns:
            float32[B, H] sentence embeddings.
        """
        hidden = BertModel(self.config, self.precision, name="bert")(input_ids, attention_mask)
        if self.pooling == "mean":
            pooled = mean_pool(hidden, attention_mask)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            raise ValueError(f"pooling {self.pooling!r} is not supported (mean | cls)")
        return l2_normalize(pooled) if self.normalize else pooled
