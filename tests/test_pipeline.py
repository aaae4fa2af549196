"""Which stages a run up to a stage executes: the stage and what it reads, in pipeline order."""

import pytest

from latentcrs_jax import pipeline


def _names(until):
    return [s.name for s in pipeline.stages_until(until)]


def test_stages_until_runs_only_what_a_stage_reads():
    assert _names("prepare") == ["prepare"]
    assert _names("pretrain") == ["prepare", "pretrain"]  # no simulate or encode
    assert _names("encode") == ["prepare", "simulate", "encode"]
    assert _names("multi_turn") == [
        "prepare",
        "simulate",
        "encode",
        "pretrain",
        "train",
        "multi_turn",
    ]
    assert _names("report") == _names(None) == [s.name for s in pipeline.STAGES]


def test_every_need_is_an_earlier_stage():
    seen = set()
    for stage in pipeline.STAGES:
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.name)


def test_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="unknown stage 'pretrian'"):
        pipeline.stages_until("pretrian")
