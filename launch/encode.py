r"""Encode stage: texts -> sentence embeddings with the Flax text encoder.

Workdir mode: the utterances and item texts of a prepared, simulated workdir (runs prepare and
simulate first when they are missing) -> <workdir>/embeddings/{train,valid,test,items}.npy.
  python -m launch.encode --config=configs/ml_latest_small.py --workdir=workdirs/mls

Standalone mode: one UTF-8 text per line -> float32 [N, D] `.npy` in line order.
  python -m launch.encode --texts=texts.txt --out=embeddings.npy \
      [--config=configs/ml_latest_small.py] [--config.text.encoder_dir=/path/to/hf_model_dir]

Without --config the embedded default config is used; config.text chooses the encoder (default
all-MiniLM-L6-v2) or precomputed embeddings (config.text.precomputed_npy / precomputed_ids).
"""

import pathlib

from absl import app, flags
from ml_collections import config_flags

from latentcrs_jax import fileio, pipeline
from latentcrs_jax.text import encode, files
from latentcrs_jax.text.errors import TextInputError
from launch import common

_CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"
_DEFAULT_CONFIG = next(
    (str(p) for p in (_CONFIG_DIR / "ml_latest_small.py", _CONFIG_DIR / "base.py") if p.is_file()),
    None,
)
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "Experiment config file (default: the embedded default config)."
)
_TEXTS = flags.DEFINE_string("texts", None, "Standalone mode: UTF-8 file, one text per line.")
_OUT = flags.DEFINE_string("out", None, "Standalone mode: output .npy, float32 [N, D].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir mode: the experiment directory.")


def encode_texts_file(config, texts_path: str, out_path: str) -> None:
    """Standalone mode: embeds every line of `texts_path` into `out_path` (written atomically)."""
    if config is None or config.get("text") is None:
        raise TextInputError("the config has no `text` section (see configs/base.py)")
    texts = files.read_lines(texts_path)
    embeddings = encode.embed_texts(texts, encode.TextSettings.from_config(config.text))
    fileio.write_npy(out_path, embeddings)
    print(f"wrote {embeddings.shape[0]} x {embeddings.shape[1]} float32 embeddings to {out_path}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    common.log_devices()
    if _TEXTS.value:
        if not _OUT.value:
            raise app.UsageError("--texts needs --out=FILE.npy")
        encode_texts_file(_CONFIG.value, _TEXTS.value, _OUT.value)
    elif _WORKDIR.value:
        pipeline.run(_CONFIG.value, _WORKDIR.value, emit=print, until="encode")
    else:
        raise app.UsageError("nothing to do: pass --workdir=DIR, or --texts=FILE --out=FILE.npy")


if __name__ == "__main__":
    common.run(main)
