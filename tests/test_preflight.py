"""Config values no field can hold are named before any stage starts (`preflight.check_values`)."""

import pytest

from configs import cds, ml1m, ml1m_standard, ml_latest_small, tiny, videogames
from latentcrs_jax import preflight
from latentcrs_jax.errors import ConfigError


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("em", "batch_size", 0, r"config\.em\.batch_size=0 must be >= 1"),
        ("pretrain", "batch_size", 0, r"config\.pretrain\.batch_size=0 must be >= 1"),
        ("em", "max_epochs", -1, r"config\.em\.max_epochs=-1 must be >= 0"),
        ("pretrain", "num_intents", 0, r"num_intents=0 must be >= 1"),
        ("em", "learning_rate", float("nan"), r"learning_rate=nan is not a finite number"),
        ("pretrain", "lr", 0.0, r"config\.pretrain\.lr=0.0 must be > 0"),
        ("backbone", "hidden_dropout", 1.0, r"hidden_dropout=1.0 must be below 1"),
        ("simulator", "history_mention_prob", 1.5, r"history_mention_prob=1.5 must be below 1"),
        ("multi_turn", "tracker_timeout_s", 0.0, r"tracker_timeout_s=0.0 must be > 0"),
        ("multi_turn", "llm_max_concurrency", 0, r"llm_max_concurrency=0 must be >= 1"),
        ("data", "min_rating", float("inf"), r"config\.data\.min_rating=inf is not a finite"),
        ("backbone", "hidden", 15, r"config\.backbone: hidden=15 not divisible by num_heads=2"),
    ],
)
def test_bad_values_are_named(section, field, value, message):
    config = tiny.get_config()
    config[section][field] = value
    with pytest.raises(ConfigError, match=message):
        preflight.check_sections(config)


def test_seeds_and_plans():
    config = tiny.get_config()
    config.em_seeds = ()
    with pytest.raises(ConfigError, match="em_seeds is empty"):
        preflight.check_sections(config)
    config = tiny.get_config()
    config.em_plans = ("latentcrs", "nope")
    with pytest.raises(ConfigError, match=r"em_plans=.*known plans: \['fusion', 'latentcrs'"):
        preflight.check_sections(config)


@pytest.mark.parametrize("module", [cds, ml1m, ml1m_standard, ml_latest_small, tiny, videogames])
@pytest.mark.parametrize("variant", [None, "faithful"])
def test_every_shipped_config_passes(module, variant):
    config = module.get_config(variant) if variant else module.get_config()
    preflight.check_sections(config)
    preflight.check_batch_sizes(config, preflight.STAGES, device_count=1)
