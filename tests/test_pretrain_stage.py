"""The pretrain stage's fingerprint: speed-only fields never make a backbone "another config"."""

import json

import pytest

from configs import tiny
from latentcrs_jax import stage_manifest
from latentcrs_jax.data import prepare
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.training.pretrain import config as pretrain_config
from latentcrs_jax.training.pretrain import stage as pretrain_stage


def test_fingerprint_ignores_speed_only_fields(tmp_path):
    config = tiny.get_config()
    prepare.run(config, tmp_path)
    base = pretrain_stage._fingerprint(config, tmp_path)
    speed = (
        ("ce_chunk", 7), ("remat", True), ("eval_batch_size", 8), ("microbatch", 4),
        ("query_blocks", 1), ("checkpoint_interval_s", 0.0),
    )  # fmt: skip
    for field, value in speed + (("eval_splits", ("valid", "test")),):
        changed = tiny.get_config()
        changed.pretrain[field] = value
        assert pretrain_stage._fingerprint(changed, tmp_path) == base, field
    for section, field, value in (("pretrain", "lr", 0.5), ("backbone", "hidden", 8)):
        changed = tiny.get_config()
        changed[section][field] = value
        assert pretrain_stage._fingerprint(changed, tmp_path) != base, field


def test_fields_added_later_leave_old_fingerprints_at_their_neutral_value(tmp_path):
    config = tiny.get_config()
    prepare.run(config, tmp_path)
    base = pretrain_stage._fingerprint(config, tmp_path)
    older = tiny.get_config()  # a config from before the learning-rate decay fields existed
    with older.pretrain.unlocked():
        del older.pretrain["lr_decay_epochs"], older.pretrain["lr_decay_factor"]
    assert pretrain_stage._fingerprint(older, tmp_path) == base
    decayed = tiny.get_config()
    decayed.pretrain.lr_decay_epochs = (2,)
    assert pretrain_stage._fingerprint(decayed, tmp_path) != base
    for field, other in (("block", "pre_ln"), ("positions", "from_start")):
        missing = tiny.get_config()  # a config from before the backbone field existed
        with missing.backbone.unlocked():
            del missing.backbone[field]
        assert pretrain_stage._fingerprint(missing, tmp_path) == base, field
        changed = tiny.get_config()
        changed.backbone[field] = other
        assert pretrain_stage._fingerprint(changed, tmp_path) != base, field
        assert getattr(pretrain_config.model_config_from(changed.backbone, 5), field) == other


def test_an_unfinished_run_resumes_only_under_the_config_that_started_it(tmp_path):
    config = tiny.get_config()
    prepare.run(config, tmp_path)
    out = pretrain_stage.stage_dir(tmp_path)
    fp = pretrain_stage._fingerprint(config, tmp_path)
    stage_manifest.claim(out, fp, replace=False)  # a fresh run records its config
    assert json.loads((out / stage_manifest.STARTED).read_text()) == fp
    stage_manifest.claim(out, fp, replace=False)  # the same config resumes
    changed = tiny.get_config()
    changed.pretrain.lr = 0.5
    with pytest.raises(UserInputError, match="unfinished run of another config"):
        pretrain_stage.run(changed, tmp_path)
