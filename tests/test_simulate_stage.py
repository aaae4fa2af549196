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


def test_fingerprints_leave_out_fields_that_never_change_the_outputs():
    from latentcrs_jax.text import stage as encode_stage

    base = tiny.get_config()
    sim = stage.fingerprint_section(base.simulator)
    before = stage_manifest.to_plain(base.simulator)
    del before["llm_tokenizer"]  # Added later; it only changes how tokens are counted.
    assert sim == before  # defaults: hashed as before
    changed = tiny.get_config()
    changed.simulator.llm_model = "other"
    assert stage.fingerprint_section(changed.simulator) == sim
    llm = tiny.get_config()
    llm.simulator.kind, llm.simulator.llm_model = "llm", "m"
    llm_section = stage.fingerprint_section(llm.simulator)
    assert llm_section["llm_model"] == "m" and llm_section["llm_max_concurrency"] == 4
    llm.simulator.llm_max_concurrency, llm.simulator.llm_timeout_s = 32, 5.0
    llm.simulator.llm_tokenizer = "/some/tokenizer"
    assert stage.fingerprint_section(llm.simulator) == llm_section
    llm.simulator.llm_temperature = 0.0
    assert stage.fingerprint_section(llm.simulator) != llm_section
    text = encode_stage.fingerprint_section(base.text)
    # The section as hashed before the batching defaults changed: finished workdirs stay done.
    assert text == {
        "batch_size": 64,
        "buckets": [16, 32, 64, 128, 256],
        "encoder_dir": "",
        "max_length": 256,
        "precomputed_ids": "",
        "precomputed_npy": "",
    }
    batching = tiny.get_config()
    batching.text.batch_size, batching.text.buckets = 7, (32, 256)
    batching.text.batch_tokens = 512
    assert encode_stage.fingerprint_section(batching.text) == text
    batching.text.max_length = 128
    assert encode_stage.fingerprint_section(batching.text) != text
