r"""Writes a synthetic dataset in the generic CSV format (latentcrs_jax/data/synthetic.py).

  python -m launch.synthesize --num_users=100000 --num_items=50000 --out=/tmp/synth
  python -m launch.prepare --config=configs/ml_latest_small.py --workdir=/tmp/w \
      --config.data.reader=generic --config.data.data_dir=/tmp/synth
"""

from absl import flags

from latentcrs_jax.data import synthetic
from launch import common

_USERS = flags.DEFINE_integer("num_users", 10_000, "Users U.")
_ITEMS = flags.DEFINE_integer("num_items", 10_000, "Items N.")
_LENGTH = flags.DEFINE_float("mean_length", 20.0, "Mean interactions per user (>= 5).")
_TASTES = flags.DEFINE_integer("num_tastes", 16, "Latent tastes the sequences are drawn from.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed: the same seed and sizes give identical files.")
_OUT = flags.DEFINE_string("out", None, "Output folder (interactions.csv, items.csv).")
flags.mark_flags_as_required(["out"])


def main(argv):
    del argv
    cfg = synthetic.SynthConfig(
        num_users=_USERS.value,
        num_items=_ITEMS.value,
        mean_length=_LENGTH.value,
        seed=_SEED.value,
        num_tastes=_TASTES.value,
    )
    counts = synthetic.write(cfg, _OUT.value)
    print(
        f"{counts['interactions']} interactions of {counts['users']} users over "
        f"{counts['items']} items written to {_OUT.value}"
    )


if __name__ == "__main__":
    common.run(main, writes_workdir=False)
