r"""The main job: all stages for one config into one workdir (finished stages are skipped).

python -m launch.run --config=configs/ml_latest_small.py --workdir=workdirs/ml_latest_small
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, None)


if __name__ == "__main__":
    common.run(main)
