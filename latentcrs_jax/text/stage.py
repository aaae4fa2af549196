"""The encode stage: utterances and item texts -> embeddings in `<workdir>/embeddings`.

Outputs: `<split>.npy` float32[S, D] (the split's utterances, in sample order) and
`items.npy` float32[N+1, D] (row 0, PAD, is zero). Texts go through an embedding cache in
`<workdir>/embeddings/cache` keyed by (model id, text), so an interrupted run re-encodes only
what is missing. With `config.text.precomputed_npy/ids` (any external model, e.g. the paper's
4096-d Llama embeddings) utterances are looked up by sample key ("<user>_<raw|seed|valid|
test>"), falling back to the text itself; items by their text.
"""

import pathlib

import numpy as np
from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.simulator import stage as simulate_stage
from latentcrs_jax.text import cache as cache_lib
from latentcrs_jax.text import encode
from latentcrs_jax.text.errors import TextInputError


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir) / "embeddings"


# Batching fields: they change how many sentences one compiled call encodes and how much
# (masked) padding it carries, not the embeddings (beyond float rounding). They are hashed at
# the values the section was first hashed with, so that a change of the batching defaults keeps
# the fingerprints of finished workdirs; `batch_tokens`, added later, is not hashed.
BATCHING_HASHED_AS = {"batch_size": 64, "buckets": (16, 32, 64, 128, 256)}
BATCHING_SKIPPED = ("batch_tokens",)


def fingerprint_section(text) -> dict:
    """`config.text` as it determines the embeddings (batching fields at fixed values)."""
    return stage_manifest.section(text, skip=BATCHING_SKIPPED, fixed=BATCHING_HASHED_AS)


def _fingerprint(config, workdir) -> str:
    return stage_manifest.fingerprint(
        utterances=stage_manifest.content_hash(simulate_stage.stage_dir(workdir)),
        text=fingerprint_section(config.text),
    )


def _encode_fn(settings: encode.TextSettings, out: pathlib.Path):
    """Returns (embed(texts, keys) -> float32[N, D], model id)."""
    if settings.precomputed_npy or settings.precomputed_ids:
        table = cache_lib.load_precomputed(settings.precomputed_npy, settings.precomputed_ids)

        def lookup(texts, keys):
            chosen = [k if k in table else t for k, t in zip(keys, texts)]
            return cache_lib.lookup(table, chosen)

        return lookup, f"precomputed:{pathlib.Path(settings.precomputed_npy).name}"
    encoder = encode.TextEncoder.from_settings(settings)
    cache = cache_lib.EmbeddingCache(out / "cache", encoder.model_id)
    return (lambda texts, keys: cache_lib.encode_with_cache(encoder, cache, texts)), (
        encoder.model_id
    )


def run(config, workdir: str | pathlib.Path) -> str:
    """Embeds every split's utterances and the item texts unless already done."""
    out = stage_dir(workdir)
    fp = _fingerprint(config, workdir)
    if stage_manifest.is_complete(out, fp):
        logging.info("encode: %s is complete; skipping", out)
        return _summary(stage_manifest.read(out))
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    settings = encode.TextSettings.from_config(config.text)
    embed, model_id = _encode_fn(settings, out)
    shapes = {}
    for split in ds.splits:
        texts = simulate_stage.load_texts(workdir, split)
        keys = [ds.sample_key(split, i) for i in range(len(texts))]
        emb = embed(texts, keys)
        fileio.write_npy(out / f"{split}.npy", emb.astype(np.float32))
        shapes[split] = list(emb.shape)
    item_texts = [it["text"] for it in ds.items[1:]]
    try:
        item_emb = embed(item_texts, [f"item:{it['raw_id']}" for it in ds.items[1:]])
        item_emb = np.concatenate([np.zeros((1, item_emb.shape[1]), np.float32), item_emb])
        fileio.write_npy(out / "items.npy", item_emb.astype(np.float32))
        shapes["items"] = list(item_emb.shape)
    except TextInputError as e:
        if not settings.precomputed_npy:
            raise
        logging.warning("no item-text embeddings (text-only baseline disabled): %s", e)
    stage_manifest.write(out, fp, model_id=model_id, shapes=shapes)
    return _summary(stage_manifest.read(out))


def _summary(manifest: dict) -> str:
    shapes = ", ".join(f"{k} {v[0]}x{v[1]}" for k, v in manifest["shapes"].items())
    return f"embeddings ({manifest['model_id']}): {shapes}"


def load(workdir: str | pathlib.Path, name: str) -> np.ndarray:
    """Loads `<name>.npy` ("train", "valid", "test" or "items") of a finished encode stage."""
    out = stage_dir(workdir)
    if stage_manifest.read(out) is None:
        raise FileNotFoundError(f"{out}: run the encode stage first (launch/encode.py --workdir)")
    path = out / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not produced by the encode stage")
    return np.load(path)
