"""The embedded default: MovieLens ml-latest-small, shipped inside the package.

Main job (all stages):
  make run   # = python -m launch.run --config=configs/ml_latest_small.py --workdir=...
Prepare only:
  python -m launch.prepare --config=configs/ml_latest_small.py --workdir=workdirs/mls
Variant `:faithful` flips every bug switch to the authors' behaviour.
"""

from configs import base


def get_config(arg: str | None = None):
    config = base.get_base_config()
    config.data.name = "ml-latest-small"
    config.data.reader = "movielens_csv"  # ratings.csv, movies.csv, tags.csv
    config.data.data_dir = "bundled:ml-latest-small"
    config.data.domain = "movies"
    config.backbone.max_len = 50  # ICLRec's setting for datasets other than ML-1M.
    config.pretrain.num_intents = 64  # K: 603 users support far fewer intents than ML-1M's 512.
    config.pretrain.n_views = 2
    config.pretrain.max_epochs = 100
    config.pretrain.patience = 20
    config.em.max_epochs = 60
    config.em.patience = 10
    if arg == "faithful":
        base.apply_faithful(config)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; expected 'faithful' or nothing")
    return config
