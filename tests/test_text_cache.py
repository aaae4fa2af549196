"""Tests for latentcrs_jax.text.cache and .files: cache round trip, only-new encoding, atomic
writes, model-id isolation, precomputed embeddings and their errors, text-file reading."""

import os

import numpy as np
import pytest

from latentcrs_jax import fileio
from latentcrs_jax.text import cache, files


class CountingEncoder:
    """A fake encoder: deterministic embeddings from the text, recording what it encoded."""

    model_id = "fake-v1"
    dim = 3

    def __init__(self):
        self.seen = []

    def encode(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32).reshape(-1, 3)


def _expected(texts):
    return np.array([[len(t), t.count("a"), 1.0] for t in texts], np.float32)


def _shards(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_round_trip_and_reopen(tmp_path):
    store = cache.EmbeddingCache(tmp_path, "model-A")
    got, missing = store.get_many(["x"])
    assert got is None and missing.tolist() == [0]  # Empty cache: width unknown.
    texts = ["alpha", "", "日本", "alpha"]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 5)).astype(np.float32)
    emb[3] = emb[0]
    assert store.put_many(texts, emb) == 3  # "alpha" is stored once.
    got, missing = store.get_many(texts + ["new"])
    np.testing.assert_array_equal(got[:4], emb)
    assert np.all(np.isnan(got[4])) and missing.tolist() == [4]
    reopened = cache.EmbeddingCache(tmp_path, "model-A")
    assert len(reopened) == 3 and reopened.dim == 5 and "日本" in reopened
    np.testing.assert_array_equal(reopened.get_many(texts)[0], emb)
    assert store.put_many(texts, emb) == 0  # Nothing new: no new shard.
    assert len(_shards(store.path)) == 1


def test_model_ids_are_isolated(tmp_path):
    a = cache.EmbeddingCache(tmp_path, "org/model:v1")
    a.put_many(["t"], np.ones((1, 2), np.float32))
    b = cache.EmbeddingCache(tmp_path, "org/model:v2")
    assert b.get_many(["t"])[0] is None and len(b) == 0
    assert a.path != b.path and a.path.parent == tmp_path
    with pytest.raises(ValueError, match="does not match cache model"):
        cache.encode_with_cache(CountingEncoder(), a, ["t"])


def test_encodes_only_new_texts(tmp_path):
    encoder, store = CountingEncoder(), cache.EmbeddingCache(tmp_path, "fake-v1")
    first = ["a", "banana", "a", "cab"]
    np.testing.assert_array_equal(cache.encode_with_cache(encoder, store, first), _expected(first))
    assert encoder.seen == ["a", "banana", "cab"]  # Duplicates encoded once.
    second = ["cab", "avocado", "banana", "kiwi"]
    out = cache.encode_with_cache(encoder, cache.EmbeddingCache(tmp_path, "fake-v1"), second)
    np.testing.assert_array_equal(out, _expected(second))
    assert encoder.seen[3:] == ["avocado", "kiwi"]
    encoder.seen.clear()
    again = cache.encode_with_cache(encoder, store, second + first)
    np.testing.assert_array_equal(again, _expected(second + first))
    assert encoder.seen == []
    assert cache.encode_with_cache(
        encoder, cache.EmbeddingCache(tmp_path / "new", "fake-v1"), []
    ).shape == (0, 3)


def test_chunks_survive_an_interrupted_run(tmp_path):
    class Failing(CountingEncoder):
        def encode(self, texts):
            if "boom" in texts:
                raise RuntimeError("killed")
            return super().encode(texts)

    store = cache.EmbeddingCache(tmp_path, "fake-v1")
    texts = ["a1", "a2", "a3", "boom", "a5"]
    with pytest.raises(RuntimeError):
        cache.encode_with_cache(Failing(), store, texts, chunk_size=2)
    assert len(cache.EmbeddingCache(tmp_path, "fake-v1")) == 2  # The first chunk is kept.
    encoder = CountingEncoder()
    cache.encode_with_cache(encoder, cache.EmbeddingCache(tmp_path, "fake-v1"), texts)
    assert encoder.seen == ["a3", "boom", "a5"]


def test_write_is_atomic(tmp_path, monkeypatch):
    store = cache.EmbeddingCache(tmp_path, "m")
    store.put_many(["kept"], np.ones((1, 2), np.float32))
    before = _shards(store.path)

    def crash(*args, **kwargs):
        raise OSError("disk died mid-write")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="mid-write"):
        store.put_many(["lost"], np.zeros((1, 2), np.float32))
    monkeypatch.undo()
    assert _shards(store.path) == before  # No partial shard, no temporary file left over.
    # A temporary file left by a hard kill is ignored on reopen.
    (store.path / ".shard-abc.npz.xyz.tmp").write_bytes(b"PK\x03\x04 half a zip")
    reopened = cache.EmbeddingCache(tmp_path, "m")
    assert "kept" in reopened and "lost" not in reopened and len(reopened) == 1


def test_put_many_and_shard_errors(tmp_path):
    store = cache.EmbeddingCache(tmp_path, "m")
    with pytest.raises(ValueError, match="2 texts but embeddings of shape"):
        store.put_many(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        store.put_many(["a"], np.array([[np.nan, 0.0]]))
    store.put_many(["a"], np.zeros((1, 2)))
    with pytest.raises(ValueError, match="width 3, cache has 2"):
        store.put_many(["b"], np.zeros((1, 3)))
    shard = next(store.path.glob("shard-*.npz"))
    shard.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=f"Unreadable embedding-cache shard .*{shard.name}"):
        cache.EmbeddingCache(tmp_path, "m")


def _write_precomputed(tmp_path, matrix, lines):
    np.save(tmp_path / "emb.npy", matrix)
    (tmp_path / "ids.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return tmp_path / "emb.npy", tmp_path / "ids.txt"


def test_load_precomputed(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(4, 4096))  # float64, e.g. Llama's 4096-d.
    npy, ids = _write_precomputed(tmp_path, matrix, ["u1", "hello world", "", "u1"])
    with pytest.raises(ValueError, match="'u1' on lines 1 and 4 has different embeddings"):
        cache.load_precomputed(npy, ids)
    matrix[3] = matrix[0]
    npy, ids = _write_precomputed(tmp_path, matrix, ["u1", "hello world", "", "u1"])
    table = cache.load_precomputed(npy, ids)
    assert list(table) == ["u1", "hello world", ""]
    assert table["hello world"].dtype == np.float32 and table["hello world"].shape == (4096,)
    np.testing.assert_allclose(table[""], matrix[2], rtol=1e-6)
    stacked = cache.lookup(table, ["", "u1"])
    np.testing.assert_allclose(stacked, matrix[[2, 0]].astype(np.float32))
    with pytest.raises(ValueError, match="2 of 3 texts have no precomputed embedding"):
        cache.lookup(table, ["u1", "x", "y"])


def test_load_precomputed_errors(tmp_path):
    npy, ids = _write_precomputed(tmp_path, np.zeros((3, 2), np.float32), ["a", "b"])
    with pytest.raises(ValueError, match=r"emb.npy has 3 rows but .*ids.txt has 2 lines"):
        cache.load_precomputed(npy, ids)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        cache.load_precomputed(tmp_path / "missing.npy", ids)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        cache.load_precomputed(npy, tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="need both"):
        cache.load_precomputed(npy, "")
    npy, ids = _write_precomputed(tmp_path, np.zeros((2, 2, 2), np.float32), ["a", "b"])
    with pytest.raises(ValueError, match=r"float matrix \[N, D\]"):
        cache.load_precomputed(npy, ids)
    npy, ids = _write_precomputed(tmp_path, np.zeros((2, 2), np.int64), ["a", "b"])
    with pytest.raises(ValueError, match=r"float matrix \[N, D\]"):
        cache.load_precomputed(npy, ids)
    npy, ids = _write_precomputed(tmp_path, np.array([[0.0, np.inf]]), ["a"])
    with pytest.raises(ValueError, match="NaN or inf"):
        cache.load_precomputed(npy, ids)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="bad.npy is not a readable .npy"):
        cache.load_precomputed(tmp_path / "bad.npy", ids)


def test_read_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("one\r\n\ntwo\u2028still two\nthree".encode())
    assert files.read_lines(path) == ["one", "", "two\u2028still two", "three"]
    path.write_bytes(b"a\n")
    assert files.read_lines(path) == ["a"]
    path.write_bytes(b"")
    assert files.read_lines(path) == []
    path.write_bytes(b"\n")
    assert files.read_lines(path) == [""]
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\n")  # A BOM and CRLF line ends are repaired.
    assert files.read_lines(path) == ["a", "b"]
    path.write_bytes(b"ok\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"t.txt:2: not valid UTF-8 \(byte 0xe9\)"):
        files.read_lines(path)


def test_write_npy_atomic(tmp_path):
    target = tmp_path / "sub" / "x.npy"
    fileio.write_npy(target, np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(np.load(target), np.arange(6).reshape(2, 3))
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.npy"]
