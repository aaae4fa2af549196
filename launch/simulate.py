r"""Simulate stage: the first-turn utterance of every sample of a prepared dataset.

  python -m launch.simulate --config=configs/ml_latest_small.py --workdir=workdirs/mls
Runs (or skips, when done) prepare first. Output: <workdir>/utterances/*.jsonl.
"""

from absl import flags
from ml_collections import config_flags

from latentcrs_jax import pipeline
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this experiment's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    pipeline.run(_CONFIG.value, _WORKDIR.value, emit=print, until="simulate")


if __name__ == "__main__":
    common.run(main)
