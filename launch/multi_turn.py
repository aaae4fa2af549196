r"""Multi-turn stage: simulated dialogues, SR@1..R and average turns for every configured system.

Runs (or skips, when finished) the stages it reads first (prepare, simulate, encode, pretrain,
train); writes `<workdir>/eval/multi_turn.{json,md}` and `<workdir>/eval/transcripts/`. The
workdir must exist; without --config it takes the config recorded in it.
  python -m launch.multi_turn --workdir=workdirs/mls [--config=configs/ml_latest_small.py]
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir(config_required=False)


def main(argv):
    del argv
    config = common.config_for_reading(_CONFIG.value, _WORKDIR.value)
    common.run_pipeline_until(config, _WORKDIR.value, "multi_turn")


if __name__ == "__main__":
    common.run(main, creates_workdir=False)
