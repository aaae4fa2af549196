"""A tiny config for tests: the first 40 users of the embedded dataset, small models.

python -m launch.prepare --config=configs/tiny.py --workdir=/tmp/tiny   # ~2 s
"""

from configs import ml_latest_small


def get_config(arg: str | None = None):
    config = ml_latest_small.get_config(arg)
    config.data.name = "tiny"
    config.data.user_limit = 40
    return config
