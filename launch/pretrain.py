r"""Pretrain stage: the SASRec backbone (ICLRec losses or SASRec-CE) and the K intent vectors.

Reads `<workdir>/data` (run launch/prepare.py first), writes `<workdir>/pretrain/`; a killed
run resumes from its last finished epoch when started again with the same arguments.

  python -m launch.pretrain --config=configs/ml1m.py --workdir=workdirs/ml1m
  python -m launch.pretrain --config=configs/ml1m_standard.py --workdir=workdirs/ml1m_std
"""

import json

from absl import flags
from ml_collections import config_flags

from latentcrs_jax.training import pretrain
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this experiment's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    common.log_devices()
    result = pretrain.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    common.run(main)
