r"""Multi-turn stage: simulated dialogues, SR@1..R and average turns for every configured system.

Runs (or skips, when finished) the stages it reads first (prepare, simulate, encode, pretrain,
train); writes `<workdir>/eval/multi_turn.{json,md}` and `<workdir>/eval/transcripts/`.
  python -m launch.multi_turn --config=configs/ml_latest_small.py --workdir=workdirs/mls
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, "multi_turn")


if __name__ == "__main__":
    common.run(main)
