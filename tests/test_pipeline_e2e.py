"""The whole pipeline on the tiny config: every stage runs, a second run skips them all.

The stages up to training ran in the session's `tiny_trained_workdir` (`pipeline.run(...,
until="train")`, every EM plan); here `pipeline.run` continues a copy of it through evaluation,
the multi-turn table and the report, then runs again and must skip everything.
"""

import shutil

import pytest

from configs import tiny
from latentcrs_jax import pipeline
from latentcrs_jax.training import em_stage

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_workdir")]


def test_pipeline_end_to_end_then_skips(tiny_trained_workdir, tmp_path, monkeypatch):
    workdir = tmp_path / "w"
    shutil.copytree(tiny_trained_workdir, workdir)
    config = tiny.get_config()
    config.em_plans = ("latentcrs", "fusion")  # trained: a subset of the workdir's plans
    config.multi_turn.num_samples = 10
    config.multi_turn.rounds = 2
    lines = []
    pipeline.run(config, workdir, emit=lines.append)
    text = "\n".join(lines)
    assert "| LatentCRS (prior mixture) |" in text and "| text-only retrieval |" in text
    assert "| LatentCRS^V, stand-in validator (no LLM), top 20 |" in text  # one-turn ^V
    assert "| LatentCRS^F |" in text
    assert "| late fusion (valid-fitted) |" in text and "| late fusion + filter |" in text
    # The main job's ^V row is the keyless stand-in, and the cost table says what is keyless.
    assert "| LatentCRS^V, stand-in validator (no LLM) |" in text
    assert "Token cost per dialogue" in text and "0 (keyless)" in text
    for path in (
        "pretrain/intents.npy",
        "em/seed0/em/best_params.msgpack",
        "eval/one_turn.json",
        "eval/late_fusion.json",
        "report/report.md",
        "report/intent_map.png",
    ):
        assert (workdir / path).is_file(), path
    # Training stages are skipped: no file is written again except the one-turn table and the
    # report, which are re-derived from the saved metrics each run (seconds), identically.
    rederived = ("eval/one_turn.json", "eval/one_turn.md")

    def stamps():
        return {
            p: p.stat().st_mtime_ns
            for p in workdir.rglob("*")
            if p.is_file()
            and p.relative_to(workdir).parts[0] != "report"
            and p.relative_to(workdir).as_posix() not in rederived
        }

    before = stamps()
    tables = [(workdir / p).read_bytes() for p in rederived]
    loads = []
    real_load = em_stage.load_inputs
    monkeypatch.setattr(
        em_stage, "load_inputs", lambda *a, **k: loads.append(k.get("splits")) or real_load(*a, **k)
    )
    again = []
    pipeline.run(config, workdir, emit=again.append)
    assert None not in loads  # finished EM stages never load their inputs (the report: test)
    assert not loads  # the report reads the saved test user states: no backbone run
    assert stamps() == before
    assert [(workdir / p).read_bytes() for p in rederived] == tables
    assert again[-4] == lines[-4]  # the same multi-turn table
