r"""Evaluate stage: the one-turn table of every head and baseline.

Runs (or skips, when finished) the stages it reads first; writes `<workdir>/eval/one_turn.*`.
  python -m launch.evaluate --config=configs/ml1m.py --workdir=workdirs/ml1m
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, "evaluate")


if __name__ == "__main__":
    common.run(main)
