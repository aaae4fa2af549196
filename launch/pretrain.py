r"""Pretrain stage: the SASRec backbone (ICLRec losses or SASRec-CE) and the K intent vectors.

Runs (or skips, when done) prepare first; writes `<workdir>/pretrain/`. A finished stage is
skipped, a killed run resumes from its last finished epoch when started again.

  python -m launch.pretrain --config=configs/ml1m.py --workdir=workdirs/ml1m
  python -m launch.pretrain --config=configs/ml1m_standard.py --workdir=workdirs/ml1m_std
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, "pretrain")


if __name__ == "__main__":
    common.run(main)
