r"""Evaluate stage: the one-turn table of every head and baseline.

Runs (or skips, when finished) the stages it reads first; writes `<workdir>/eval/one_turn.*`.
The workdir must exist; without --config it takes the config recorded in it.
  python -m launch.evaluate --workdir=workdirs/ml1m [--config=configs/ml1m.py]
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir(config_required=False)


def main(argv):
    del argv
    config = common.config_for_reading(_CONFIG.value, _WORKDIR.value)
    common.run_pipeline_until(config, _WORKDIR.value, "evaluate")


if __name__ == "__main__":
    common.run(main, creates_workdir=False)
