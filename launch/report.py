r"""Report stage: figures and a Markdown page for a workdir.

Runs (or skips, when finished) every earlier stage first, then writes `<workdir>/report/*.png`
and `<workdir>/report/report.md` (training curves, intent map and coherence, multi-turn
success rate, one-turn table) and prints the page's path.
  python -m launch.report --config=configs/ml_latest_small.py --workdir=workdirs/mls
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()


def main(argv):
    del argv
    common.run_pipeline_until(_CONFIG.value, _WORKDIR.value, "report")


if __name__ == "__main__":
    common.run(main)
