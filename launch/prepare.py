r"""Prepare stage: raw files -> processed dataset in <workdir>/data, then the statistics table.

  python -m launch.prepare --config=configs/ml_latest_small.py --workdir=workdirs/mls \
      [--config.data.min_rating=0] [--export_sequences=seqs.tsv]
"""

from absl import flags

from latentcrs_jax import preflight, workdir_config
from latentcrs_jax.data import dataset, prepare, stats
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir()
_EXPORT = flags.DEFINE_string(
    "export_sequences",
    None,
    "Also write one line per user, '<raw user id>\\t<raw item ids...>' in time order.",
)


def main(argv):
    del argv
    preflight.check(_CONFIG.value, ["prepare"])
    workdir_config.record(_CONFIG.value, _WORKDIR.value)
    ds = prepare.prepare(_CONFIG.value.data, _WORKDIR.value)
    print(stats.format_table(ds.stats, ds.name))
    if _EXPORT.value:
        dataset.export_sequences(ds, _EXPORT.value)
        print(f"sequences written to {_EXPORT.value}")


if __name__ == "__main__":
    common.run(main)
