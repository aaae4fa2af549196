"""MovieLens-1M with the paper's settings (LatentCRS protocol, method.md section 1).

GroupLens forbids redistribution, so the data is not bundled: point `data_dir` at your copy
(the default is ../shared/data/ml-1m beside the repository, when it exists).
  python -m launch.prepare --config=configs/ml1m.py --workdir=workdirs/ml1m \
      [--config.data.data_dir=/path/to/ml-1m]
Expected: 6,034 users, 3,533 items, 575,272 interactions, 35,649 train samples, in ~10 s.
"""

import pathlib

from configs import base

_SHARED_ML1M = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"


def get_config(arg: str | None = None):
    config = base.get_base_config()
    config.data.name = "ml-1m"
    config.data.reader = "movielens_dat"  # ratings.dat + movies.dat, latin-1, '::'
    config.data.data_dir = str(_SHARED_ML1M) if _SHARED_ML1M.is_dir() else ""
    config.data.domain = "movies"
    if arg == "faithful":
        base.apply_faithful(config)
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; expected 'faithful' or nothing")
    return config
