"""Embedding cache keyed by (model id, SHA-256 of the text), and precomputed embeddings.

Layout: `<directory>/<model dir name>/shard-<hash>.npz`, each shard holding `keys` (hex SHA-256
of the texts, str[n]), `embeddings` (float32[n, D]) and `model_id`. Every `put_many` writes one
new shard atomically (temporary file + fsync + `os.replace`), so an interrupted run never leaves
a half-written shard and a rerun encodes only the texts not cached yet.

`load_precomputed` plugs in embeddings from any external model (e.g. the paper's 4096-d Llama
ones): an `.npy` float matrix [N, D] plus a UTF-8 file with one id or text per line.
"""

import hashlib
import os
import pathlib
import re
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.text import files
from latentcrs_jax.text.errors import TextFileNotFoundError, TextInputError


def text_key(text: str) -> str:
    """Hex SHA-256 of the UTF-8 text: the cache key within one model id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _model_dir_name(model_id: str) -> str:
    """A filesystem-safe, collision-free directory name for a model id."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:80] or "model"
    return f"{readable}-{hashlib.sha256(model_id.encode('utf-8')).hexdigest()[:8]}"


class EmbeddingCache:
    """On-disk embeddings of one model, held in memory; new shards on disk are picked up lazily.

    Attributes:
        model_id: identifies the encoder (weights and settings) whose embeddings are stored.
        path: the directory of this model's shards.
        dim: embedding width D, or None while nothing is stored.
    """

    def __init__(self, directory: str | os.PathLike, model_id: str):
        """Opens (or creates lazily) the cache of `model_id` under `directory`.

        Raises:
            ValueError: naming the shard when a shard is unreadable, was written for another
                model id, or disagrees with the others on D.
        """
        if not model_id:
            raise TextInputError("model_id must be a non-empty string")
        self.model_id = model_id
        self.path = pathlib.Path(directory) / _model_dir_name(model_id)
        self.dim: int | None = None
        self._rows: dict[str, tuple[int, int]] = {}  # Text key -> (shard index, row).
        self._shards: list[np.ndarray] = []
        self._loaded: set[str] = set()  # Names of the shard files read so far.
        self.refresh()
        if self._shards:
            logging.info(
                "Embedding cache %s: %d texts in %d shards", self.path, len(self), len(self._shards)
            )

    def refresh(self) -> None:
        """Reads shards written since the last look (by another instance or process)."""
        for shard in sorted(self.path.glob("shard-*.npz")):
            if shard.name not in self._loaded:
                self._add_shard(*self._read_shard(shard))
                self._loaded.add(shard.name)

    def _read_shard(self, shard: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
        """Returns (keys str[n], embeddings float32[n, D]) of one shard file, validated."""
        try:
            with np.load(shard, allow_pickle=False) as z:
                keys, embeddings, model_id = z["keys"], z["embeddings"], str(z["model_id"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise TextInputError(f"Unreadable embedding-cache shard {shard}: {e}") from e
        if model_id != self.model_id:
            raise TextInputError(f"{shard} holds model {model_id!r}, expected {self.model_id!r}")
        if embeddings.ndim != 2 or len(keys) != len(embeddings):
            raise TextInputError(f"{shard}: {len(keys)} keys for embeddings {embeddings.shape}")
        return keys, embeddings

    def _add_shard(self, keys: np.ndarray, embeddings: np.ndarray) -> None:
        """Indexes one shard in memory."""
        if self.dim is None:
            self.dim = int(embeddings.shape[1])
        elif embeddings.shape[1] != self.dim:
            raise TextInputError(
                f"Embedding cache {self.path} mixes widths {self.dim} and {embeddings.shape[1]}"
            )
        index = len(self._shards)
        self._shards.append(np.asarray(embeddings, dtype=np.float32))
        for row, key in enumerate(keys):
            self._rows.setdefault(str(key), (index, row))

    def __len__(self) -> int:
        """Number of distinct texts cached."""
        return len(self._rows)

    def __contains__(self, text: str) -> bool:
        """Whether `text` is cached (shards written elsewhere included)."""
        self.refresh()
        return text_key(text) in self._rows

    def get_many(self, texts: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray]:
        """Looks texts up.

        Args:
            texts: N strings.

        Returns:
            (embeddings, missing): float32[N, D] with NaN rows for texts not cached (None when the
            cache is empty, as D is unknown), and int64[M] ascending indices of those texts.
        """
        self.refresh()
        locations = [self._rows.get(text_key(t)) for t in texts]
        missing = np.array([i for i, loc in enumerate(locations) if loc is None], dtype=np.int64)
        if self.dim is None:
            return None, missing
        out = np.full((len(texts), self.dim), np.nan, dtype=np.float32)
        for i, loc in enumerate(locations):
            if loc is not None:
                out[i] = self._shards[loc[0]][loc[1]]
        return out, missing

    def put_many(self, texts: Sequence[str], embeddings: np.ndarray) -> int:
        """Stores embeddings of texts not cached yet, as one new shard written atomically.

        Args:
            texts: N strings.
            embeddings: float[N, D] rows in the order of `texts`.

        Returns:
            How many texts were newly stored (0 writes nothing).

        Raises:
            ValueError: on a shape mismatch, a different D than stored, or non-finite values.
        """
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
            raise TextInputError(f"{len(texts)} texts but embeddings of shape {embeddings.shape}")
        if self.dim is not None and embeddings.shape[1] != self.dim:
            raise TextInputError(
                f"embeddings have width {embeddings.shape[1]}, cache has {self.dim}"
            )
        if not np.all(np.isfinite(embeddings)):
            raise TextInputError("refusing to cache non-finite embeddings")
        self.refresh()
        new_rows: dict[str, int] = {}
        for i, text in enumerate(texts):
            key = text_key(text)
            if key not in self._rows and key not in new_rows:
                new_rows[key] = i
        if not new_rows:
            return 0
        keys = np.array(sorted(new_rows))
        rows = embeddings[[new_rows[k] for k in keys]]
        name = f"shard-{hashlib.sha256(''.join(keys).encode('ascii')).hexdigest()[:20]}.npz"
        with files.atomic_open(self.path / name) as f:
            np.savez(f, keys=keys, embeddings=rows, model_id=np.array(self.model_id))
        self._add_shard(keys, rows)
        self._loaded.add(name)
        return len(keys)


def encode_with_cache(
    encoder: Any, cache: EmbeddingCache, texts: Sequence[str], chunk_size: int = 8192
) -> np.ndarray:
    """Embeds texts, encoding only those not cached yet and caching them as it goes.

    Args:
        encoder: anything with `encode(texts) -> float32[n, D]` (a `TextEncoder`); if it has a
            `model_id`, it must equal the cache's.
        cache: the cache to read and extend.
        texts: N strings; duplicates are encoded once.
        chunk_size: texts per stored shard, so an interrupted run keeps finished chunks.

    Returns:
        float32[N, D] in the order of `texts`.
    """
    encoder_id = getattr(encoder, "model_id", cache.model_id)
    if encoder_id != cache.model_id:
        raise TextInputError(
            f"encoder {encoder_id!r} does not match cache model {cache.model_id!r}"
        )
    _, missing = cache.get_many(texts)
    todo = list(dict.fromkeys(texts[i] for i in missing))
    if todo:
        logging.info("Encoding %d uncached texts (%d cached)", len(todo), len(texts) - len(missing))
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        cache.put_many(chunk, encoder.encode(chunk))
    out, missing = cache.get_many(texts)
    if out is None:  # No texts at all and an empty cache.
        dim = getattr(encoder, "dim", 0)
        return np.zeros((0, dim), dtype=np.float32)
    assert not len(missing), "every text was just cached"
    return out


def load_precomputed(
    npy_path: str | os.PathLike, ids_path: str | os.PathLike
) -> dict[str, np.ndarray]:
    """Loads embeddings made by any external model.

    Args:
        npy_path: `.npy` float matrix [N, D] (memory-mapped; float32 stays a view).
        ids_path: UTF-8 file, one id or text per line (see `files.read_lines`), N lines.

    Returns:
        {id: float32[D]} in file order. A repeated id is allowed only with identical rows.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: when a path is empty; naming the files on a non-2-D / non-float /
            non-finite matrix, a row-count mismatch, or a repeated id with different rows.
    """
    if not str(npy_path) or not str(ids_path):
        raise TextInputError(
            "precomputed embeddings need both an .npy matrix and an ids file "
            f"(got npy={str(npy_path)!r}, ids={str(ids_path)!r})"
        )
    npy_path, ids_path = pathlib.Path(npy_path), pathlib.Path(ids_path)
    if not npy_path.is_file():
        raise TextFileNotFoundError(f"Precomputed embedding matrix not found: {npy_path}")
    ids = files.read_lines(ids_path)
    try:
        matrix = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise TextInputError(f"{npy_path} is not a readable .npy file: {e}") from e
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        raise TextInputError(
            f"{npy_path} must hold a float matrix [N, D], got {matrix.dtype}{matrix.shape}"
        )
    if matrix.shape[0] != len(ids):
        raise TextInputError(
            f"{npy_path} has {matrix.shape[0]} rows but {ids_path} has {len(ids)} lines; they must "
            "match one to one"
        )
    matrix = matrix if matrix.dtype == np.float32 else matrix.astype(np.float32)
    if not np.all(np.isfinite(matrix)):
        raise TextInputError(f"{npy_path} contains NaN or inf values")
    table: dict[str, np.ndarray] = {}
    first_line: dict[str, int] = {}
    for line, key in enumerate(ids):
        if key in table and not np.array_equal(table[key], matrix[line]):
            raise TextInputError(
                f"{ids_path}: id {key[:80]!r} on lines {first_line[key] + 1} and {line + 1} has "
                "different embeddings"
            )
        table.setdefault(key, matrix[line])
        first_line.setdefault(key, line)
    logging.info("Loaded %d precomputed embeddings of width %d", len(table), matrix.shape[1])
    return table


def lookup(table: Mapping[str, np.ndarray], texts: Sequence[str]) -> np.ndarray:
    """Stacks precomputed embeddings for texts.

    Returns:
        float32[N, D] in the order of `texts` (D of the table; [0, 0] for an empty table).

    Raises:
        TextInputError: saying how many texts are absent and showing the first few.
    """
    absent = [t for t in texts if t not in table]
    if absent:
        preview = ", ".join(repr(t[:60]) for t in absent[:3])
        raise TextInputError(
            f"{len(absent)} of {len(texts)} texts have no precomputed embedding: {preview}"
        )
    dim = len(next(iter(table.values()))) if table else 0
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(table[t], dtype=np.float32) for t in texts])
