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


def test_item_chunked_rankings_equal_the_full_ones(loaded, tiny_trained_workdir):
    # Every system's ranker (multi-turn `item_chunk`) gives `rank_items`'s lists, and the
    # one-turn table's computed rows (`em.eval_item_chunk`) the unchunked metrics.
    from latentcrs_jax.conversation import filter as filter_lib
    from latentcrs_jax.evaluation import chunked, late_fusion

    systems, ctx = loaded
    test = ctx.dataset.splits["test"]
    texts = simulate_stage.load_texts(tiny_trained_workdir, "test")[:32]
    history = test.history[:32]
    for name, system in systems.items():
        want = filter_lib.rank_items(system.score(history, texts), history, k=30)
        got = chunked.ranked_lists(*system.ranker.top_k(history, texts, 30, 7, True))
        assert got == want, name
    config = tiny.get_config()
    full = one_turn.baseline_metrics(tiny_trained_workdir, "test", True)
    fused = late_fusion.metrics(config, tiny_trained_workdir, "test")
    config.em.eval_item_chunk = 7
    for row, metrics in one_turn.baseline_metrics(tiny_trained_workdir, "test", True, 7).items():
        assert metrics == pytest.approx(full[row], abs=1e-6), row
    assert late_fusion.metrics(config, tiny_trained_workdir, "test") == pytest.approx(
        fused, abs=1e-6
    )
