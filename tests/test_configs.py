"""Every shipped config and variant builds, and each section converts to its typed settings
(a misspelt field or an impossible value fails here, not an hour into a run)."""

import importlib

import pytest

from latentcrs_jax.conversation import multi_turn
from latentcrs_jax.simulator import api
from latentcrs_jax.text import encode
from latentcrs_jax.training import em
from latentcrs_jax.training.pretrain import config as pretrain_config

CONFIGS = [
    ("ml_latest_small", None), ("tiny", None), ("ml1m", None), ("ml1m", "ce"),
    ("ml1m", "faithful"), ("ml1m", "ce,faithful"), ("ml1m", "ce,plus"),
    ("ml_latest_small", "plus"), ("ml_latest_small", "aligned"), ("ml1m", "ce,aligned"),
    ("ml_latest_small", "aligned,plus"), ("ml1m_standard", None),
    ("ml1m_standard", "published"), ("cds", None), ("videogames", None),
]  # fmt: skip


@pytest.mark.parametrize("name,variant", CONFIGS)
def test_config_sections_convert(name, variant):
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    model = pretrain_config.model_config_from(config.backbone, num_items=10)
    settings = pretrain_config.pretrain_config_from(config.pretrain)
    em.EMConfig.from_config(config.em)
    api.SimulatorConfig.from_config(config.simulator)
    encode.TextSettings.from_config(config.text)
    multi_turn.MultiTurnSettings.from_config(config.multi_turn)
    assert model.hidden % model.num_heads == 0 and settings.batch_size > 0


def test_standard_protocol_variants():
    from configs import ml1m_standard

    default, published = ml1m_standard.get_config(), ml1m_standard.get_config("published")
    assert default.pretrain.loss == published.pretrain.loss == "ce"
    assert default.backbone.positions == published.backbone.positions == "from_start"
    assert (default.backbone.block, published.backbone.block) == ("post_ln", "pre_ln")
    assert pretrain_config.model_config_from(published.backbone, 10).ffn_mult == 1
    with pytest.raises(ValueError, match="unknown"):
        ml1m_standard.get_config("publishd")


def test_plus_variant_sets_only_the_extensions():
    from configs import base, ml1m, ml_latest_small

    for module, arg in ((ml_latest_small, "plus"), (ml1m, "ce,plus")):
        plus = em.EMConfig.from_config(module.get_config(arg).em)
        plain = em.EMConfig.from_config(module.get_config(arg.replace("plus", "") or None).em)
        changed = {
            k for k in em.EMConfig.__dataclass_fields__ if getattr(plus, k) != getattr(plain, k)
        }
        assert changed == set(base.PLUS)
