"""Amazon Reviews 2023 Video_Games (the authors' "VedioGames").

  python -m launch.prepare --config=configs/videogames.py \
      --config.data.data_dir=/path/to/amazon2023 --workdir=workdirs/videogames
"""

from configs import amazon


def get_config(arg: str | None = None):
    return amazon.get_amazon_config("Video_Games", "videogames", "video games", arg)
