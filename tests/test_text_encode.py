"""Tests for latentcrs_jax.text.encode: parity with sentence-transformers through the real
batched/bucketed path, bucketing and the compile bound, order, empty texts, the binary."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, shared_path

from configs import base
from latentcrs_jax.text import bert, encode, weights

TINY = bert.BertConfig(
    hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
)


@pytest.fixture(scope="module")
def minilm():
    """The default all-MiniLM-L6-v2 encoder, loaded once for the module."""
    return encode.TextEncoder.load()


@pytest.fixture(scope="module")
def parity():
    data = np.load(shared_path("fixtures", "minilm_parity.npz"), allow_pickle=False)
    return [str(s) for s in data["sentences"]], data["embeddings"], data["token_counts"]


def _tiny_encoder(**kwargs):
    """Random tiny BERT with the real MiniLM tokenizer (vocab 30522), short buckets."""
    dummy = np.zeros((1, 1), np.int32)
    shapes = jax.eval_shape(bert.SentenceEncoder(TINY).init, jax.random.key(0), dummy, dummy)
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: rng.normal(0.0, 0.5, x.shape).astype(np.float32), shapes["params"]
    )
    tokenizer = weights.load_tokenizer(weights.default_model_dir(), 512)
    kwargs = {"max_length": 64, "buckets": (8, 16, 32), "batch_size": 4, **kwargs}
    return encode.TextEncoder(TINY, params, tokenizer, **kwargs)


@pytest.fixture(scope="module")
def tiny():
    return _tiny_encoder()


def _texts(n, seed=0):
    """n texts of 0..~40 words (so every bucket up to 64 tokens is used)."""
    rng = np.random.default_rng(seed)
    words = ["movie", "great", "sci-fi", "a", "the", "thriller", "comedy", "90s", "jazz"]
    return [" ".join(rng.choice(words, size=rng.integers(0, 45))) for _ in range(n)]


def test_parity_with_sentence_transformers(minilm, parity):
    sentences, reference, token_counts = parity
    counts = [len(ids) for ids in minilm.tokenize(sentences)]
    np.testing.assert_array_equal(counts, token_counts)
    # The real bucketed paths: a fixed 8 sentences a batch, and the default token budget.
    for ours in (minilm.encode(sentences, batch_size=8), minilm.encode(sentences)):
        assert ours.shape == reference.shape and ours.dtype == np.float32
        cosine = np.sum(ours * reference, 1) / (
            np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
        )
        assert cosine.min() >= 0.99999, (cosine.argmin(), cosine.min())
        assert np.abs(ours - reference).max() <= 1e-4


def test_minilm_defaults(minilm):
    assert minilm.dim == 384 and minilm.max_length == 256
    assert minilm.buckets == encode.DEFAULT_BUCKETS and minilm.buckets[-1] == 256
    assert minilm.batch_tokens == encode.DEFAULT_BATCH_TOKENS
    assert minilm.model_id.startswith("all-MiniLM-L6-v2-") and minilm.model_id.endswith("len256")
    np.testing.assert_array_equal(minilm.tokenize(["", "  "]), [[101, 102], [101, 102]])


def _check_plan(plan, lengths, buckets, rows_for):
    """Every text once, in its own bucket, full batches but each bucket's last, row bounds."""
    indices = np.concatenate([idx for idx, _ in plan])
    np.testing.assert_array_equal(np.sort(indices), np.arange(len(lengths)))
    assert [length for _, length in plan] == sorted(length for _, length in plan)
    for k, (idx, length) in enumerate(plan):
        assert all(encode.bucket_length(lengths[i], buckets) == length for i in idx)
        assert 1 <= len(idx) <= rows_for(length)
        if k < len(plan) - 1 and plan[k + 1][1] == length:
            assert len(idx) == rows_for(length)  # Only a bucket's last batch may be partial.


def test_plan_batches_fixed_rows_covers_every_text_once():
    lengths = [3, 17, 5, 40, 2, 16, 9, 33, 8, 8, 64, 1]
    buckets = (8, 16, 32, 64)
    plan = encode.plan_batches(lengths, buckets, batch_size=3)
    _check_plan(plan, lengths, buckets, lambda length: 3)
    assert [([lengths[i] for i in idx], length) for idx, length in plan] == [
        ([1, 2, 3], 8),
        ([5, 8, 8], 8),
        ([9, 16], 16),
        ([17], 32),
        ([33, 40, 64], 64),
    ]


@pytest.mark.parametrize("budget", [1, 24, 64, 100, 256])
def test_plan_batches_token_budget_bounds(budget):
    rng = np.random.default_rng(budget)
    lengths = rng.integers(2, 65, size=300).tolist()
    buckets = (8, 16, 24, 32, 48, 64)
    plan = encode.plan_batches(lengths, buckets, batch_size=1, batch_tokens=budget)
    rows_for = encode.rows_rule(1, budget)
    _check_plan(plan, lengths, buckets, rows_for)
    for idx, length in plan:  # rows x length within the budget, or one over-long row.
        assert len(idx) * length <= budget or len(idx) == 1
    assert rows_for(8) == max(1, budget // 8) and rows_for(64) == max(1, budget // 64)


def test_plan_batches_token_budget_by_hand():
    # Budget 32: 4 rows at length 8, 2 at 16, 1 at 32. Sorted lengths 3 4 5 6 7 | 9 11 12 | 20.
    lengths = [9, 3, 20, 4, 5, 12, 6, 7, 11]
    plan = encode.plan_batches(lengths, (8, 16, 32), batch_size=99, batch_tokens=32)
    assert [(idx.tolist(), length) for idx, length in plan] == [
        ([1, 3, 4, 6], 8),
        ([7], 8),
        ([0, 8], 16),
        ([5], 16),
        ([2], 32),
    ]
    # An over-long text for the budget still gets a row of its own.
    assert encode.plan_batches([30, 31], (32,), 1, batch_tokens=8)[1][0].tolist() == [1]


def test_bucket_helpers():
    assert encode.normalize_buckets((64, 16, 16, 512), 256) == (16, 64, 256)
    assert encode.normalize_buckets((16, 32), 20) == (16, 20)
    assert encode.bucket_length(16, (16, 32)) == 16 and encode.bucket_length(17, (16, 32)) == 32
    with pytest.raises(ValueError, match="largest bucket"):
        encode.bucket_length(33, (16, 32))
    with pytest.raises(ValueError, match="max_length"):
        encode.normalize_buckets((16,), 1)
    with pytest.raises(ValueError, match="batch_size"):
        encode.plan_batches([3], (8,), 0)
    with pytest.raises(ValueError, match="batch_tokens"):
        encode.plan_batches([3], (8,), 4, batch_tokens=-1)


def test_padded_rows_are_powers_of_two_up_to_the_batch():
    assert [encode.padded_rows(n, 8) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 4, 4, 8, 8]
    assert [encode.padded_rows(n, 6) for n in (1, 3, 5, 6)] == [1, 4, 6, 6]


def test_compiles_a_bounded_number_of_times():
    encoder = _tiny_encoder(batch_tokens=0)  # 4 rows: the last batch runs as 1, 2 or 4 rows.
    lengths = [len(ids) for ids in encoder.tokenize(_texts(40))]
    assert {encode.bucket_length(n, encoder.buckets) for n in lengths} == {8, 16, 32, 64}
    for seed in range(4):  # Different texts and counts, a bounded set of shapes.
        encoder.encode(_texts(30 + seed, seed))
    traced = encoder.num_traces
    assert 4 <= traced <= 4 * 3  # At most buckets x {1, 2, 4} rows.
    for seed in range(4):
        encoder.encode(_texts(30 + seed, seed))
    assert encoder.num_traces == traced  # Same texts again: nothing new to compile.
    encoder.encode(["one short text"] * 5)  # 4 rows + 1 row.
    encoder.encode(["one short text"])
    assert encoder.num_traces <= traced + 2


def test_token_budget_compiles_a_bounded_number_of_times():
    encoder = _tiny_encoder(batch_tokens=64)  # Full batches: 8x8, 4x16, 2x32, 1x64.
    for seed in range(6):
        encoder.encode(_texts(25 + 7 * seed, seed))
    # Per bucket: 8, 4, 2 or 1 rows at most, powers of two, so at most 4 + 3 + 2 + 1 shapes.
    assert encoder.num_traces <= 10
    traced = encoder.num_traces
    encoder.encode(_texts(25, 0))
    assert encoder.num_traces == traced


def test_token_budget_equals_fixed_batches_and_old_buckets():
    texts = _texts(61, seed=3) + ["", "dup", "dup"]
    old = _tiny_encoder(buckets=(16, 32, 64), batch_tokens=0)  # The earlier batching.
    new = _tiny_encoder(buckets=(8, 16, 24, 32, 40, 48, 56, 64), batch_tokens=96)
    reference = old.encode(texts)
    for got in (new.encode(texts), new.encode(texts, batch_tokens=40), new.encode(texts, 5)):
        np.testing.assert_allclose(got, reference, atol=2e-6)
    perm = np.random.default_rng(1).permutation(len(texts))
    np.testing.assert_allclose(new.encode([texts[i] for i in perm]), reference[perm], atol=2e-6)


def test_order_and_batch_composition(tiny):
    texts = _texts(23, seed=5) + ["", "", "dup", "dup"]
    together = tiny.encode(texts)
    alone = np.stack([tiny.encode([t])[0] for t in texts[::4]])
    np.testing.assert_allclose(together[::4], alone, atol=1e-6)
    perm = np.random.default_rng(0).permutation(len(texts))
    shuffled = tiny.encode([texts[i] for i in perm])  # Other batch mates, same shapes.
    np.testing.assert_allclose(shuffled, together[perm], atol=1e-6)
    np.testing.assert_array_equal(together[-1], together[-2])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)


def test_empty_inputs_and_truncation(tiny):
    assert tiny.encode([]).shape == (0, 16)
    empty = tiny.encode([""])
    assert empty.shape == (1, 16) and np.all(np.isfinite(empty))
    long_ids = tiny.tokenize(["word " * 500])[0]
    assert len(long_ids) == 64 and long_ids[0] == 101 and long_ids[-1] == 102
    with pytest.raises(TypeError, match="text 1 is a int"):
        tiny.tokenize(["ok", 3])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        encode.TextEncoder(TINY, tiny.params, tiny.tokenizer, max_length=1024)


def test_benchmark_reports_throughput(tiny):
    texts = _texts(8)
    result = encode.benchmark_encoder(tiny, texts, batch_size=4, repeats=2)
    assert result["num_texts"] == 8 and len(result["seconds"]) == 2
    assert result["sentences_per_s"] > 0 and result["tokens_per_s"] > result["sentences_per_s"]
    assert result["batch_size"] == 4 and result["batch_tokens"] == 0
    budget = encode.benchmark_encoder(tiny, texts, repeats=1)
    assert budget["batch_tokens"] == tiny.batch_tokens
    real = sum(len(ids) for ids in tiny.tokenize(texts))
    assert real <= budget["padded_tokens"] <= result["padded_tokens"]


def test_forward_cost_per_shape(tiny):
    before = tiny.num_traces
    costs = encode.forward_cost(tiny, shapes=((3, 8), (2, 16)), repeats=2)
    assert [(c["rows"], c["length"]) for c in costs] == [(3, 8), (2, 16)]
    assert all(c["cpu_us_per_token"] >= 0 and c["wall_us_per_token"] > 0 for c in costs)
    assert tiny.num_traces - before <= 2  # One compile per new shape, none per repeat.


def test_benchmark_texts_repeat_a_fixture_or_a_text_file(tmp_path):
    from latentcrs_jax import benchmark
    from latentcrs_jax.errors import UserInputError

    np.savez(tmp_path / "f.npz", sentences=np.array(["a b", "ç d", "e"]))
    assert benchmark.benchmark_texts(str(tmp_path / "f.npz"), 5) == [
        "a b",
        "ç d",
        "e",
        "a b",
        "ç d",
    ]
    (tmp_path / "t.txt").write_text("one\ntwo\n", encoding="utf-8")
    assert benchmark.benchmark_texts(str(tmp_path / "t.txt"), 3) == ["one", "two", "one"]
    synthetic = benchmark.benchmark_texts(None, 4)
    assert len(synthetic) == 4 and synthetic == benchmark.benchmark_texts(None, 4)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(UserInputError, match="empty.txt: no sentences"):
        benchmark.benchmark_texts(str(tmp_path / "empty.txt"))


def test_tokenization_matches_transformers(minilm):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(weights.default_model_dir())
    texts = ["Émile's café — ÜBER!", "日本のアニメ", "", "tabs\tand\nnewlines", "x " * 300]
    ours = minilm.tokenize(texts)
    theirs = hf([t.strip() for t in texts], truncation=True, max_length=256)["input_ids"]
    assert ours == theirs


def test_settings_from_config_match_library_defaults():
    text = base.get_base_config().text
    assert encode.TextSettings.from_config(text) == encode.TextSettings()
    text.buckets = [8, 16]
    assert encode.TextSettings.from_config(text).buckets == (8, 16)


def test_precomputed_settings(tmp_path):
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "e.npy", table)
    (tmp_path / "ids.txt").write_text("a\nb\nc\n", encoding="utf-8")
    settings = encode.TextSettings(
        precomputed_npy=str(tmp_path / "e.npy"), precomputed_ids=str(tmp_path / "ids.txt")
    )
    np.testing.assert_array_equal(encode.embed_texts(["c", "a"], settings), table[[2, 0]])
    with pytest.raises(ValueError, match="1 of 2 texts have no precomputed embedding: 'zz'"):
        encode.embed_texts(["a", "zz"], settings)


def _run_binary(*args):
    return subprocess.run(
        [sys.executable, "-m", "launch.encode", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_binary_texts_mode(tmp_path, minilm):
    texts = ["I like sci-fi thrillers.", "", "Émile's café"]
    (tmp_path / "t.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    proc = _run_binary(f"--texts={tmp_path / 't.txt'}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    written = np.load(out)
    assert written.dtype == np.float32 and written.shape == (3, 384)
    np.testing.assert_allclose(written, minilm.encode(texts), atol=1e-6)


def test_binary_bad_input_is_one_clear_line(tmp_path):
    (tmp_path / "t.txt").write_text("hello\n", encoding="utf-8")
    proc = _run_binary(
        f"--texts={tmp_path / 't.txt'}",
        f"--out={tmp_path / 'o.npy'}",
        f"--config.text.encoder_dir={tmp_path / 'no_model'}",
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no_model" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.npy").exists()
