r"""Report binary: figures and a Markdown page for a finished workdir.

Writes `<workdir>/report/*.png` and `<workdir>/report/report.md` (training curves, intent
map and coherence, multi-turn success rate, one-turn table) and prints the page's path.
Without --config it takes the config recorded in the workdir; it takes no workdir lock.
  python -m launch.report --workdir=workdirs/mls [--config=configs/ml_latest_small.py]
"""

from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir(config_required=False)


def main(argv):
    del argv
    from latentcrs_jax import report

    config = common.config_for_reading(_CONFIG.value, _WORKDIR.value)
    print(report.build(config, _WORKDIR.value))


if __name__ == "__main__":
    common.run(main, writes_workdir=False)
