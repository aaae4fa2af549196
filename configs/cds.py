"""Amazon Reviews 2023 CDs_and_Vinyl.

  python -m launch.prepare --config=configs/cds.py \
      --config.data.data_dir=/path/to/amazon2023 --workdir=workdirs/cds
The authors kept CDs sequences in review-file order (docs/method.md 7.10); `:faithful` does too.
"""

from configs import amazon


def get_config(arg: str | None = None):
    config = amazon.get_amazon_config("CDs_and_Vinyl", "cds", "CDs", arg)
    if arg == "faithful":
        config.data.sort_by_time = False
    return config
