r"""Pretrain stage: the SASRec backbone (ICLRec losses or SASRec-CE) and the K intent vectors.

Prepares `<workdir>/data` if needed, writes `<workdir>/pretrain/`; a finished stage is
skipped, a killed run resumes from its last finished epoch when started again.

  python -m launch.pretrain --config=configs/ml1m.py --workdir=workdirs/ml1m
  python -m launch.pretrain --config=configs/ml1m_standard.py --workdir=workdirs/ml1m_std
"""

from latentcrs_jax import preflight, workdir_config
from latentcrs_jax.data import prepare
from latentcrs_jax.training import pretrain_stage
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.log_devices()
    preflight.check(_CONFIG.value, ["prepare", "pretrain"])
    workdir_config.record(_CONFIG.value, _WORKDIR.value)
    print(prepare.run(_CONFIG.value, _WORKDIR.value))
    print(pretrain_stage.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
    common.run(main)
