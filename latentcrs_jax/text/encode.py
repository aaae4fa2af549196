"""Batched sentence encoding: length buckets, a fixed batch size, results in input order.

Texts are tokenised once, sorted by token count and grouped by bucket length (the smallest
bucket >= the count); each group is cut into batches of `batch_size` rows; a group's last,
partial batch is padded with empty rows up to the next power of two (so one chat utterance runs
as one row, not `batch_size`). The jitted forward therefore sees at most
len(buckets) * (1 + log2(batch_size)) shapes, so it compiles a bounded number of times however
many texts come in.
"""

import dataclasses
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from latentcrs_jax.text import bert, cache, weights
from latentcrs_jax.text.errors import TextInputError

DEFAULT_BUCKETS = (16, 32, 64, 128, 256)  # Padded sequence lengths (tokens incl. [CLS]/[SEP]).


def normalize_buckets(buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
    """Sorted unique buckets no longer than `max_length`, always ending at `max_length`."""
    if max_length < 2:
        raise TextInputError(f"max_length must be >= 2 ([CLS] + [SEP]), got {max_length}")
    if any(int(b) < 1 for b in buckets):
        raise TextInputError(f"bucket lengths must be positive, got {tuple(buckets)}")
    kept = sorted({int(b) for b in buckets if int(b) < max_length})
    return (*kept, max_length)


def padded_rows(count: int, batch_size: int) -> int:
    """Rows of a batch holding `count` texts: the next power of two, at most `batch_size`."""
    return min(batch_size, 1 << max(count - 1, 0).bit_length())


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= `length` (buckets sorted ascending).

    Raises:
        ValueError: when `length` exceeds the largest bucket.
    """
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise TextInputError(f"length {length} exceeds the largest bucket {buckets[-1]}")


def plan_batches(
    lengths: Sequence[int], buckets: Sequence[int], batch_size: int
) -> list[tuple[np.ndarray, int]]:
    """Groups texts into same-length batches.

    Args:
        lengths: int[N] token counts.
        buckets: ascending padded lengths; the last one must cover every length.
        batch_size: rows per batch; a batch holds at most this many text indices.

    Returns:
        A list of (indices int64[<= batch_size], padded length) in ascending length order; every
        index 0..N-1 occurs exactly once.
    """
    if batch_size < 1:
        raise TextInputError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    padded = np.array([bucket_length(int(n), buckets) for n in lengths[order]], dtype=np.int64)
    plan = []
    for bucket in np.unique(padded):
        members = order[padded == bucket]
        for start in range(0, len(members), batch_size):
            plan.append((members[start : start + batch_size], int(bucket)))
    return plan


@dataclasses.dataclass(frozen=True)
class TextSettings:
    """The fields of `config.text` that choose where embeddings come from."""

    encoder_dir: str = ""  # "" = the default all-MiniLM-L6-v2 package.
    max_length: int = 256
    batch_size: int = 64
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    precomputed_npy: str = ""  # Non-empty: look texts up in these embeddings instead.
    precomputed_ids: str = ""

    @classmethod
    def from_config(cls, text_config: Any) -> "TextSettings":
        """Picks the known fields out of a `config.text` ConfigDict (or any mapping)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dict(text_config).items() if k in fields}
        if "buckets" in values:
            values["buckets"] = tuple(values["buckets"])
        return cls(**values)


class TextEncoder:
    """A loaded sentence encoder: `encode(texts) -> float32[N, D]`.

    Build it with `TextEncoder.load(encoder_dir)` (weights from disk) or directly from a config,
    a param tree and a tokenizer (tests use random params). The forward pass is jitted once per
    (batch size, bucket) with the params as an argument.
    """

    def __init__(
        self,
        config: bert.BertConfig,
        params: Any,
        tokenizer: Any,
        *,
        max_length: int = 256,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        batch_size: int = 64,
        sentence: weights.SentenceConfig | None = None,
        model_id: str = "custom",
        precision: str | None = "highest",
    ):
        """Wraps a model that is already in memory.

        Args:
            config: the BERT architecture.
            params: the `params` tree of `bert.SentenceEncoder(config)`.
            tokenizer: a `tokenizers.Tokenizer`; truncation to `max_length` is set here.
            max_length: truncation length in tokens incl. [CLS]/[SEP].
            buckets: padded sequence lengths (see `normalize_buckets`).
            batch_size: default rows per forward call.
            sentence: pooling, normalisation and lowercasing from the sentence-transformers
                files; None means mean pooling + L2 normalisation, no lowercasing.
            model_id: identifies the weights and settings, e.g. for the embedding cache.
            precision: matmul precision of the forward.
        """
        if max_length > config.max_position_embeddings:
            raise TextInputError(
                f"max_length {max_length} exceeds max_position_embeddings "
                f"{config.max_position_embeddings}"
            )
        sentence = sentence or weights.SentenceConfig()
        self.config = config
        self.max_length = int(max_length)
        self.buckets = normalize_buckets(buckets, self.max_length)
        self.batch_size = int(batch_size)
        self.sentence = sentence
        self.model_id = model_id
        self.params = jax.device_put(params)
        self.tokenizer = tokenizer
        self.tokenizer.enable_truncation(max_length=self.max_length)
        self.tokenizer.no_padding()
        self._module = bert.SentenceEncoder(
            config, pooling=sentence.pooling, normalize=sentence.normalize, precision=precision
        )
        self.num_traces = 0  # How many times the forward was traced (= compiled).
        self._forward = jax.jit(self._embed)

    @classmethod
    def load(
        cls,
        encoder_dir: str | os.PathLike | None = "",
        *,
        max_length: int | None = None,
        buckets: Sequence[int] = DEFAULT_BUCKETS,
        batch_size: int = 64,
    ) -> "TextEncoder":
        """Loads a Hugging Face-style directory ("" or None: the default all-MiniLM-L6-v2).

        Args:
            encoder_dir: the model directory.
            max_length: truncation length; None takes `sentence_bert_config.json`'s
                max_seq_length, else the model's max_position_embeddings.
            buckets: padded sequence lengths.
            batch_size: default rows per forward call.

        Raises:
            FileNotFoundError / ModuleNotFoundError / ValueError: see `weights`.
        """
        is_default = encoder_dir is None or str(encoder_dir) == ""
        model_dir = weights.check_model_dir(weights.resolve_model_dir(encoder_dir))
        config = weights.load_bert_config(model_dir)
        sentence = weights.load_sentence_config(model_dir)
        if max_length is None:
            max_length = sentence.max_seq_length or config.max_position_embeddings
        name = weights.DEFAULT_MODEL_NAME if is_default else model_dir.resolve().name
        fingerprint = weights.file_fingerprint(model_dir / weights.WEIGHTS_FILE)
        model_id = f"{name}-{fingerprint}-len{max_length}"
        encoder = cls(
            config,
            weights.load_params(model_dir, config),
            weights.load_tokenizer(model_dir, max_length),
            max_length=max_length,
            buckets=buckets,
            batch_size=batch_size,
            sentence=sentence,
            model_id=model_id,
        )
        logging.info("Loaded text encoder %s from %s", model_id, model_dir)
        return encoder

    @classmethod
    def from_settings(cls, settings: TextSettings) -> "TextEncoder":
        """Loads the encoder that `config.text` (as `TextSettings`) names."""
        return cls.load(
            settings.encoder_dir,
            max_length=settings.max_length,
            buckets=settings.buckets,
            batch_size=settings.batch_size,
        )

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return self.config.hidden_size

    def _embed(self, params: Any, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """The function under jit: int32[B, L] ids and mask -> float32[B, D]."""
        self.num_traces += 1  # Runs only while tracing.
        return self._module.apply({"params": params}, input_ids, attention_mask)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to `max_length`, with [CLS]/[SEP].

        Texts are stripped (and lowercased if the model dir says so) as sentence-transformers
        does before tokenising.

        Raises:
            TypeError: naming the index of the first non-string.
        """
        prepared = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, not a str")
            text = text.strip()
            prepared.append(text.lower() if self.sentence.do_lower_case else text)
        if not prepared:
            return []
        return [encoding.ids for encoding in self.tokenizer.encode_batch(prepared)]

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: N strings (empty strings are fine: they encode as [CLS][SEP]).
            batch_size: rows per forward call; None uses the encoder's default.

        Returns:
            float32[N, D] embeddings in the order of `texts`.
        """
        batch_size = self.batch_size if batch_size is None else int(batch_size)
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if not ids:
            return out
        plan = plan_batches([len(x) for x in ids], self.buckets, batch_size)
        start = last_log = time.perf_counter()
        done, pending = 0, None
        for indices, length in plan:
            rows = padded_rows(len(indices), batch_size)
            input_ids = np.zeros((rows, length), dtype=np.int32)
            mask = np.zeros((rows, length), dtype=np.int32)
            for row, i in enumerate(indices):
                input_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1
            result = self._forward(self.params, input_ids, mask)  # Dispatched asynchronously.
            if pending is not None:  # Copy the previous batch while this one runs.
                out[pending[0]] = np.asarray(pending[1])[: len(pending[0])]
                done += len(pending[0])
            pending = (indices, result)
            now = time.perf_counter()
            if now - last_log >= 10.0:
                logging.info(
                    "Encoded %d/%d texts (%.1f sentences/s)", done, len(ids), done / (now - start)
                )
                last_log = now
        out[pending[0]] = np.asarray(pending[1])[: len(pending[0])]
        elapsed = time.perf_counter() - start
        logging.info(
            "Encoded %d texts in %d batches, %.2f s (%.1f sentences/s)",
            len(ids),
            len(plan),
            elapsed,
            len(ids) / max(elapsed, 1e-9),
        )
        return out


def benchmark_encoder(
    encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64, repeats: int = 3
) -> dict[str, Any]:
    """Times `encoder.encode` after one warm-up call (which compiles every bucket used).

    Returns:
        {"sentences_per_s": median over repeats, "tokens_per_s", "seconds": per repeat,
        "num_texts", "batch_size", "repeats", "platform"}.
    """
    num_tokens = sum(len(x) for x in encoder.tokenize(texts))
    encoder.encode(texts, batch_size)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(texts, batch_size)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "sentences_per_s": len(texts) / median,
        "tokens_per_s": num_tokens / median,
        "seconds": seconds,
        "num_texts": len(texts),
        "batch_size": batch_size,
        "repeats": repeats,
        "platform": jax.devices()[0].platform,
    }


def embed_texts(texts: Sequence[str], settings: TextSettings) -> np.ndarray:
    """Embeds texts with the configured encoder, or looks them up in precomputed embeddings.

    Returns:
        float32[N, D] in the order of `texts`.

    Raises:
        TextInputError: in precomputed mode, naming how many texts (and the first few) are absent.
    """
    if settings.precomputed_npy or settings.precomputed_ids:
        table = cache.load_precomputed(settings.precomputed_npy, settings.precomputed_ids)
        return cache.lookup(table, texts)
    return TextEncoder.from_settings(settings).encode(texts)
