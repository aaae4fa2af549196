r"""Simulate stage: the first-turn utterance of every sample of a prepared dataset.

  python -m launch.simulate --config=configs/ml_latest_small.py --workdir=workdirs/mls
Runs prepare first if the workdir has no dataset yet. Output: <workdir>/utterances/*.jsonl.
"""

from absl import flags
from ml_collections import config_flags

from latentcrs_jax.data import prepare
from latentcrs_jax.simulator import stage
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this experiment's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    prepare.prepare(_CONFIG.value.data, _WORKDIR.value)
    print(stage.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
    common.run(main)
