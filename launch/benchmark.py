r"""Throughput and memory of a config, printed and written as JSON (a benchmark, not a test).

  python -m launch.benchmark --config=configs/ml1m.py --num_items=3533 --out=bench_ml1m.json
  python -m launch.benchmark --config=configs/ml_latest_small.py --num_items=6298
  python -m launch.benchmark --config=configs/ml1m.py:ce --parts=pretrain [--full_length]
  python -m launch.benchmark --config=configs/ml1m.py --parts=encoder \
      --encoder_texts=../shared/fixtures/minilm_parity.npz
  python -m launch.benchmark --config=configs/ml1m.py --parts=encoder_shapes
Figures: device kind and count, pretrain sequences/s, E-step and M-step samples/s (corrected
and faithful), full-ranking users/s, encoder sentences/s, compile times, peak RSS.
"""

import json

from absl import flags
from ml_collections import config_flags

from latentcrs_jax import benchmark, fileio
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 3533, "Catalogue size N (ML-1M: 3533).")
_PARTS = flags.DEFINE_list(
    "parts",
    ["pretrain", "em", "encoder"],
    "Which figures to measure: pretrain, em, encoder, encoder_shapes.",
)
_FULL_LENGTH = flags.DEFINE_bool(
    "full_length", False, "Pretrain inputs all max_len real items (default: ML-1M-like lengths)."
)
_ENCODER_TEXTS = flags.DEFINE_string(
    "encoder_texts",
    None,
    "Encoder sentences: an .npz with `sentences` (e.g. ../shared/fixtures/minilm_parity.npz) or "
    "a text file, one per line, repeated to 512 (default: synthetic utterances).",
)
_OUT = flags.DEFINE_string("out", None, "Also write the figures to this JSON file.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    common.log_devices()
    result = benchmark.run(
        _CONFIG.value,
        _NUM_ITEMS.value,
        tuple(_PARTS.value),
        _FULL_LENGTH.value,
        _ENCODER_TEXTS.value,
    )
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if _OUT.value:
        fileio.write_text(_OUT.value, text + "\n")


if __name__ == "__main__":
    common.run(main)
