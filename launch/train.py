r"""Train stage: the three EM stages, baselines and ablations for every seed of the config.

Runs (or skips, when finished) prepare, simulate, encode and pretrain first; writes
`<workdir>/em/seed<k>/<stage>/`. A killed run resumes where it stopped.
  python -m launch.train --config=configs/ml1m.py --workdir=workdirs/ml1m
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, "train")


if __name__ == "__main__":
    common.run(main)
