r"""Simulate stage: the first-turn utterance of every sample of a prepared dataset.

Runs (or skips, when done) prepare first. Output: <workdir>/utterances/*.jsonl.
  python -m launch.simulate --config=configs/ml_latest_small.py --workdir=workdirs/mls
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, "simulate")


if __name__ == "__main__":
    common.run(main)
