"""Shared settings of the Amazon Reviews 2023 configs (videogames, cds)."""

from configs import base


def get_amazon_config(category: str, name: str, domain: str, arg: str | None):
    """Amazon rules: ratings >= 4, iterated 5-core to convergence, items need metadata."""
    config = base.get_base_config()
    config.data.name = name
    config.data.reader = "amazon2023"  # <category>.jsonl + meta_<category>.jsonl
    config.data.data_dir = ""  # Required: the folder holding the two jsonl(.gz) files.
    config.data.category = category
    config.data.domain = domain
    config.data.item_core = 5
    config.data.require_metadata = True
    if arg == "faithful":
        base.apply_faithful(config)
        config.data.kcore_max_passes = 10  # The authors' fixed 10 passes.
        config.data.amazon_item_key = "asin"
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; expected 'faithful' or nothing")
    return config
