"""The simulate stage on the tiny config: outputs, no leaks, skip when done, redo on change."""

from configs import tiny
from latentcrs_jax import stage_manifest
from latentcrs_jax.data import prepare
from latentcrs_jax.simulator import find_leak, stage


def test_simulate_stage_writes_every_split_and_skips_when_done(tmp_path):
    config = tiny.get_config()
    ds = prepare.prepare(config.data, tmp_path)
    stage.run(config, tmp_path)
    for split, samples in ds.splits.items():
        utts = stage.load_utterances(tmp_path, split)
        assert len(utts) == len(samples)
        for u, target in zip(utts, samples.target):
            assert u.text and find_leak(u.text, ds.items[int(target)]) is None
            assert 1 <= len(u.conditions) <= config.simulator.max_conditions
    manifest = tmp_path / "utterances" / "manifest.json"
    mtime = manifest.stat().st_mtime_ns
    stage.run(config, tmp_path)
    assert manifest.stat().st_mtime_ns == mtime  # skipped
    first = stage.load_texts(tmp_path, "test")
    config.simulator.seed = 1
    assert not stage_manifest.is_complete(
        tmp_path / "utterances", stage._fingerprint(config, tmp_path)
    )
    stage.run(config, tmp_path)
    assert stage.load_texts(tmp_path, "test") != first
