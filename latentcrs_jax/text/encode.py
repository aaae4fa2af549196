"""Batched sentence encoding: tight length buckets, a token budget, results in input order.

Texts are tokenised once, sorted by token count and grouped by bucket length (the smallest
bucket >= the count); each group is cut into batches of as many texts as the token budget
allows at that length (`batch_tokens // length` rows; with `batch_tokens=0`, a fixed
`batch_size` rows); a group's last, partial batch is padded with empty rows up to the next
power of two (so one chat utterance runs as one row). The jitted forward therefore sees at most
1 + log2(rows) shapes per bucket, so it compiles a bounded number of times however many texts
come in (in one run: about two per bucket used).

The default buckets are 8 tokens apart up to 64 (dialogue turns are 8-60 tokens), then 16 and
32 apart: on dialogue turns padding costs about 15% of the real tokens where the earlier
(16, 32, 64, 128, 256) buckets cost 44%, and a batch of 2,048 padded tokens holds 64-256 short
sentences rather than 64."""

import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

from latentcrs_jax.text import bert, cache, weights
from latentcrs_jax.text.errors import TextInputError

# Padded sequence lengths (tokens incl. [CLS]/[SEP]): one compile per bucket used.
DEFAULT_BUCKETS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256)
DEFAULT_BATCH_TOKENS = 2048  # Padded tokens per forward call (rows x bucket length).


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


def rows_rule(batch_size: int, batch_tokens: int = 0) -> Callable[[int], int]:
    """Rows of a full batch as a function of its padded length.

    Args:
        batch_size: rows of every batch when `batch_tokens` is 0.
        batch_tokens: padded tokens per batch (rows x length <= batch_tokens, at least one row);
            0 = a fixed `batch_size` rows.

    Raises:
        TextInputError: for a batch_size < 1 (when it is used) or a negative batch_tokens.
    """
    if batch_tokens < 0:
        raise TextInputError(f"batch_tokens must be >= 0 (0 = off), got {batch_tokens}")
    if batch_tokens:
        return lambda length: max(1, batch_tokens // length)
    if batch_size < 1:
        raise TextInputError(f"batch_size must be >= 1, got {batch_size}")
    return lambda length: batch_size


def plan_batches(
    lengths: Sequence[int],
    buckets: Sequence[int],
    batch_size: int,
    batch_tokens: int = 0,
) -> list[tuple[np.ndarray, int]]:
    """Groups texts into same-length batches.

    Args:
        lengths: int[N] token counts.
        buckets: ascending padded lengths; the last one must cover every length.
        batch_size: rows per batch when `batch_tokens` is 0.
        batch_tokens: padded-token budget per batch (see `rows_rule`); 0 = fixed batch_size.

    Returns:
        A list of (indices int64[<= rows], padded length) in ascending length order: each
        bucket's texts (those whose smallest bucket >= length is that one) cut into batches of
        `rows_rule(batch_size, batch_tokens)(bucket)` texts, the last one of a bucket partial;
        every index 0..N-1 occurs exactly once.
    """
    rows_for = rows_rule(batch_size, batch_tokens)
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    padded = np.array([bucket_length(int(n), buckets) for n in lengths[order]], dtype=np.int64)
    plan = []
    for bucket in np.unique(padded):
        members, rows = order[padded == bucket], rows_for(int(bucket))
        for start in range(0, len(members), rows):
            plan.append((members[start : start + rows], int(bucket)))
    return plan


@dataclasses.dataclass(frozen=True)
class TextSettings:
    """The fields of `config.text` that choose where embeddings come from."""

    encoder_dir: str = ""  # "" = the default all-MiniLM-L6-v2 package.
    max_length: int = 256
    batch_size: int = 64
    batch_tokens: int = DEFAULT_BATCH_TOKENS
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
    (rows, bucket) shape with the params as an argument.
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
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
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
            batch_size: rows per forward call when `batch_tokens` is 0.
            batch_tokens: default padded tokens per forward call (rows = batch_tokens //
                bucket length); 0 = a fixed `batch_size` rows.
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
        self.batch_tokens = int(batch_tokens)
        rows_rule(self.batch_size, self.batch_tokens)  # Validates both.
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
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
    ) -> "TextEncoder":
        """Loads a Hugging Face-style directory ("" or None: the default all-MiniLM-L6-v2).

        Args:
            encoder_dir: the model directory.
            max_length: truncation length; None takes `sentence_bert_config.json`'s
                max_seq_length, else the model's max_position_embeddings.
            buckets: padded sequence lengths.
            batch_size: rows per forward call when `batch_tokens` is 0.
            batch_tokens: padded tokens per forward call; 0 = a fixed `batch_size` rows.

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
            batch_tokens=batch_tokens,
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
            batch_tokens=settings.batch_tokens,
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

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        batch_tokens: int | None = None,
    ) -> np.ndarray:
        """Embeds texts.

        Args:
            texts: N strings (empty strings are fine: they encode as [CLS][SEP]).
            batch_size: a fixed number of rows per forward call (then `batch_tokens` defaults
                to 0); None uses the encoder's default.
            batch_tokens: padded tokens per forward call; 0 = fixed `batch_size` rows; None
                uses the encoder's default (or 0 when `batch_size` is given).

        Returns:
            float32[N, D] embeddings in the order of `texts`.
        """
        if batch_tokens is None:
            batch_tokens = self.batch_tokens if batch_size is None else 0
        batch_size = self.batch_size if batch_size is None else int(batch_size)
        rows_for = rows_rule(batch_size, int(batch_tokens))
        ids = self.tokenize(texts)
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if not ids:
            return out
        plan = plan_batches([len(x) for x in ids], self.buckets, batch_size, int(batch_tokens))
        start = last_log = time.perf_counter()
        done, pending = 0, None
        for indices, length in plan:
            rows = padded_rows(len(indices), rows_for(length))
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
    encoder: TextEncoder,
    texts: Sequence[str],
    batch_size: int | None = None,
    repeats: int = 3,
    batch_tokens: int | None = None,
) -> dict[str, Any]:
    """Times `encoder.encode(texts, batch_size, batch_tokens)` after one warm-up call (which
    compiles every shape used); None batch settings mean the encoder's defaults.

    Returns:
        {"sentences_per_s": median over repeats, "tokens_per_s", "padded_tokens" (tokens the
        forward computes, padding included), "seconds": per repeat, "num_texts", "batch_size",
        "batch_tokens", "repeats", "platform"}.
    """
    if batch_tokens is None:
        batch_tokens = encoder.batch_tokens if batch_size is None else 0
    batch_size = encoder.batch_size if batch_size is None else batch_size
    lengths = [len(x) for x in encoder.tokenize(texts)]
    rows_for = rows_rule(batch_size, batch_tokens)
    plan = plan_batches(lengths, encoder.buckets, batch_size, batch_tokens) if texts else []
    padded = sum(padded_rows(len(i), rows_for(length)) * length for i, length in plan)
    encoder.encode(texts, batch_size, batch_tokens)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode(texts, batch_size, batch_tokens)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "sentences_per_s": len(texts) / median,
        "tokens_per_s": sum(lengths) / median,
        "padded_tokens": padded,
        "seconds": seconds,
        "num_texts": len(texts),
        "batch_size": batch_size,
        "batch_tokens": batch_tokens,
        "repeats": repeats,
        "platform": jax.devices()[0].platform,
    }


SHAPES = ((64, 16), (64, 24), (64, 32), (64, 64), (128, 16), (256, 8), (32, 64), (16, 128))


def forward_cost(
    encoder: TextEncoder, shapes: Sequence[tuple[int, int]] = SHAPES, repeats: int = 3
) -> list[dict[str, float]]:
    """Cost of the jitted forward alone per padded token, for each [rows, length] shape.

    CPU seconds (`time.process_time`, all threads) stay comparable on a busy machine where
    wall time does not; the best of `repeats` calls after a warm-up (compile) call.

    Returns:
        One {"rows", "length", "cpu_us_per_token", "wall_us_per_token"} per shape.
    """
    out = []
    for rows, length in shapes:
        ids = np.full((rows, length), 1000, dtype=np.int32)  # Any real token id.
        mask = np.ones((rows, length), dtype=np.int32)
        encoder._forward(encoder.params, ids, mask).block_until_ready()  # Compiles.
        cpu, wall = [], []
        for _ in range(repeats):
            c, w = time.process_time(), time.perf_counter()
            encoder._forward(encoder.params, ids, mask).block_until_ready()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        tokens = rows * length
        out.append(
            {
                "rows": rows,
                "length": length,
                "cpu_us_per_token": min(cpu) / tokens * 1e6,
                "wall_us_per_token": min(wall) / tokens * 1e6,
            }
        )
    return out


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
