"""The pretrain stage's fingerprint: speed-only fields never make a backbone "another config"."""

from configs import tiny
from latentcrs_jax.data import prepare
from latentcrs_jax.training import pretrain_stage


def test_fingerprint_ignores_speed_only_fields(tmp_path):
    config = tiny.get_config()
    prepare.run(config, tmp_path)
    base = pretrain_stage._fingerprint(config, tmp_path)
    for field, value in (("ce_chunk", 7), ("remat", True), ("eval_batch_size", 8)):
        changed = tiny.get_config()
        changed.pretrain[field] = value
        assert pretrain_stage._fingerprint(changed, tmp_path) == base, field
    for section, field, value in (("pretrain", "lr", 0.5), ("backbone", "hidden", 8)):
        changed = tiny.get_config()
        changed[section][field] = value
        assert pretrain_stage._fingerprint(changed, tmp_path) != base, field
