"""The whole pipeline on the tiny config: every stage runs, a second run skips them all."""

import shutil
import time

from configs import tiny
from latentcrs_jax import pipeline


def test_pipeline_end_to_end_then_skips(tiny_encoded_workdir, tmp_path):
    workdir = tmp_path / "w"
    shutil.copytree(tiny_encoded_workdir, workdir)
    config = tiny.get_config()
    config.em_plans = ("latentcrs", "fusion")
    config.multi_turn.num_samples = 10
    config.multi_turn.rounds = 2
    lines = []
    pipeline.run(config, workdir, emit=lines.append)
    text = "\n".join(lines)
    assert "| LatentCRS (prior mixture) |" in text and "| text-only retrieval |" in text
    assert "| LatentCRS^F |" in text
    for path in (
        "pretrain/intents.npy",
        "em/seed0/em/best_params.msgpack",
        "eval/one_turn.json",
        "report/report.md",
        "report/intent_map.png",
    ):
        assert (workdir / path).is_file(), path
    manifests = sorted(workdir.rglob("manifest.json"))
    before = {p: p.stat().st_mtime_ns for p in manifests}
    start = time.perf_counter()
    again = []
    pipeline.run(config, workdir, emit=again.append)
    assert time.perf_counter() - start < 60  # everything is skipped (no training, no encoding)
    assert {p: p.stat().st_mtime_ns for p in manifests} == before
    assert again[-4] == lines[-4]  # the same multi-turn table
