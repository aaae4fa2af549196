"""`load_systems` on a trained tiny workdir: every one-turn row is a system, scoring as trained."""

import json

import numpy as np
import pytest

from configs import tiny
from latentcrs_jax.evaluation import one_turn, ranking, recommenders
from latentcrs_jax.simulator import stage as simulate_stage

# The session's tiny workdirs: one xdist worker runs all their users (`--dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_workdir")]


@pytest.fixture(scope="module")
def loaded(tiny_trained_workdir):
    return recommenders.load_systems(tiny.get_config(), tiny_trained_workdir)


def test_every_one_turn_row_is_a_system(loaded):
    systems, _ = loaded
    assert set(systems) == {
        "latentcrs",
        "posterior",
        "backbone",
        "fusion",
        "no_kl",
        "no_rec",
        "text",
        "popularity",
        "late_fusion",
    }
    assert all(s.name == name for name, s in systems.items())


@pytest.mark.parametrize(
    "system,stage,head",
    [
        ("latentcrs", "em", "prior"),
        ("posterior", "em", "posterior"),
        ("backbone", "em", "backbone"),
        ("fusion", "fusion", "prior"),
        ("no_kl", "no_kl_em", "prior"),
    ],
)
def test_systems_reproduce_the_trained_test_metrics(
    loaded, tiny_trained_workdir, system, stage, head
):
    # The stage's final metrics were computed on the test split from the same best-valid
    # parameters; scoring through `load_systems` with the split's texts must give them back.
    systems, ctx = loaded
    test = ctx.dataset.splits["test"]
    texts = simulate_stage.load_texts(tiny_trained_workdir, "test")
    scores = systems[system].score(test.history, texts)
    sums = ranking.full_ranking_metrics(scores, test.target, test.history)
    got = {k: float(s / c) for k, (s, c) in sums.items()}
    final = json.loads(
        (tiny_trained_workdir / "em" / "seed0" / stage / "final_metrics.json").read_text()
    )
    for m in ("hit@10", "ndcg@10", "hit@20"):
        assert got[m] == pytest.approx(final[f"test/{head}/{m}"], abs=1e-5), m


def test_popularity_ranks_by_training_counts(loaded):
    systems, ctx = loaded
    counts = one_turn.popularity_scores(ctx.dataset)
    history = np.zeros((3, 4), np.int32)
    scores = systems["popularity"].score(history, ["a", "b", "c"])
    assert scores.shape == (3, ctx.dataset.num_items + 1)
    np.testing.assert_array_equal(scores, np.broadcast_to(counts, scores.shape))


def test_late_fusion_system_reproduces_its_one_turn_row(loaded, tiny_trained_workdir):
    from latentcrs_jax.evaluation import late_fusion

    systems, ctx = loaded
    config = tiny.get_config()
    test = ctx.dataset.splits["test"]
    texts = simulate_stage.load_texts(tiny_trained_workdir, "test")
    scores = systems["late_fusion"].score(test.history, texts)
    sums = ranking.full_ranking_metrics(scores, test.target, test.history)
    got = {k: float(s / c) for k, (s, c) in sums.items()}
    want = late_fusion.metrics(config, tiny_trained_workdir, "test")
    for m in ("hit@10", "ndcg@10", "hit@20"):
        assert got[m] == pytest.approx(want[m], abs=1e-5), m
