"""Item-chunked ranking outside training (evaluation/chunked.py and its users): every chunk
size gives the unchunked lists and metrics, ties, masked history and non-finite scores
included."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentcrs_jax.conversation import filter as filter_lib
from latentcrs_jax.conversation import multi_turn, multi_turn_protocol
from latentcrs_jax.evaluation import chunked, late_fusion, one_turn, recommenders
from latentcrs_jax.models import latentcrs
from latentcrs_jax.training import em

N = 23  # items 1..N; chunk sizes: 1, uneven (5), dividing N + 1 (8), larger than N + 1
CHUNKS = (1, 5, 8, 40)


def _ints(rng, shape, lo=-3, hi=4):
    """Small integer-valued floats: dot products are exact, so equal scores tie exactly."""
    return rng.integers(lo, hi, size=shape).astype(np.float32)


def _tables(seed=0, d=3):
    rng = np.random.default_rng(seed)
    emb = _ints(rng, (N + 1, d))
    emb[9] = emb[4]  # duplicate items: exact ties, the lower id must come first
    emb[17] = emb[4]
    return rng, emb


def _histories(rng, rows=10, width=4):
    h = rng.integers(1, N + 1, size=(rows, width)).astype(np.int32)
    h[::3, :2] = 0  # left padding
    h[1] = [0, 0, 4, 9]  # a tied item in the history
    return h


def test_moments_equal_the_mean_and_std_over_real_items():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(6, N + 1)).astype(np.float32) * 4 + 2
    scores[:, 0] = 1e6  # PAD plays no part
    want_mean, want_std = scores[:, 1:].mean(1), scores[:, 1:].std(1)
    table = jnp.asarray(scores.T)  # [N+1, B]: chunk fn gathers columns
    for c in CHUNKS:
        mean, std = chunked.moments(lambda ids: table[ids].T, N + 1, 6, c)
        np.testing.assert_allclose(mean, want_mean, rtol=1e-5)
        np.testing.assert_allclose(std, want_std, rtol=1e-5)


@pytest.mark.parametrize("mask", [True, False])
def test_dot_scorer_lists_equal_rank_items(mask):
    rng, emb = _tables()
    users = _ints(rng, (10, emb.shape[1]))
    users[2] = 0.0  # every score 0: ties everywhere
    histories = _histories(rng)
    scorer = recommenders.dot_scorer(lambda h, t: users[: len(h)], emb)
    want = filter_lib.rank_items(users @ emb.T, histories, k=12, mask_history=mask)
    masked = set(histories[2].tolist()) - {0} if mask else set()
    assert want[2] == [i for i in range(1, N + 1) if i not in masked][:12]  # all tied: by id
    for c in CHUNKS:
        got = chunked.ranked_lists(*scorer.top_k(histories, [""] * 10, 12, c, mask))
        assert got == want, c


def test_non_finite_scores_are_never_ranked_and_short_lists_stay_short():
    scores = np.zeros((2, N + 1), np.float32)
    scores[:, 5], scores[0, 6], scores[1, 7] = np.nan, np.inf, -np.inf
    scores[1, 8:] = -np.inf
    table = jnp.asarray(scores)
    scorer = chunked.ChunkedScorer(
        lambda h, t, c: table, lambda s, ids: chunked.take(s.T, ids).T, N + 1
    )
    history = np.zeros((2, 1), np.int32)
    want = filter_lib.rank_items(scores, history, k=N)
    assert len(want[1]) == 5  # items 1..4 and 6
    for c in CHUNKS:
        assert chunked.ranked_lists(*scorer.top_k(history, ["", ""], N, c, True)) == want


def test_score_rows_with_an_item_chunk_gives_the_same_lists():
    # The multi-turn protocol's ranking: padded batches, masked history, ties.
    rng, emb = _tables(2)
    users = _ints(rng, (7, emb.shape[1]))
    histories = _histories(rng, rows=7)
    lookup = {str(i): users[i] for i in range(7)}
    vec = lambda h, texts: np.stack([lookup.get(t, np.zeros(3, np.float32)) for t in texts])  # noqa: E731
    rec = recommenders.Recommender(
        "dot", lambda h, texts: vec(h, texts) @ emb.T, ranker=recommenders.dot_scorer(vec, emb)
    )
    texts = [str(i) for i in range(7)]
    for mask in (True, False):
        want = multi_turn_protocol._score_rows(rec, histories, texts, 4, 60, mask)
        assert [len(w) for w in want] == [N - len(set(h[h > 0])) if mask else N for h in histories]
        for c in (3, 24):
            assert multi_turn_protocol._score_rows(rec, histories, texts, 4, 60, mask, c) == want


def _context(rng, emb, item_text, users, x):
    ds = types.SimpleNamespace(
        num_items=N, num_users=3, sequence=lambda u: np.array([1, 2, 2, 5, 4, 9][u:], np.int32)
    )
    return recommenders.Context(
        dataset=ds,
        embed=lambda texts: x[[int(t) for t in texts]],
        user_states=lambda h: users[: len(h)],
        item_emb=emb,
        item_text_emb=item_text,
    )


def test_every_system_kind_ranks_the_same_chunked():
    rng, emb = _tables(3, d=4)
    item_text = _ints(rng, (N + 1, 5))
    users, x = _ints(rng, (6, 4)), _ints(rng, (6, 5))
    ctx = _context(rng, emb, item_text, users, x)
    intents = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    cfg = em.EMConfig(text_hidden=8, text_item_weight=0.5)
    prior = latentcrs.Prior(intents, cfg.prior_config)
    params = prior.init(jax.random.key(0), users, x, deterministic=True)
    posterior = latentcrs.Posterior(intents).init(jax.random.key(1), users)
    weights = late_fusion.Weights(0.6, 0.4, 0.2)
    log_pop = late_fusion.log_popularity(one_turn.popularity_scores(ctx.dataset))
    parts = (ctx.user_states, ctx.embed, emb, item_text, log_pop, weights)
    systems = [
        recommenders._prior_system("latentcrs", ctx, cfg, params, intents),
        recommenders._posterior_system(ctx, posterior, intents),
        recommenders._popularity_system(ctx),
        recommenders.Recommender(
            "late_fusion",
            late_fusion.recommender_score(*parts),
            ranker=late_fusion.chunked_scorer(*parts),
        ),
    ]
    histories = _histories(rng, rows=6)
    texts = [str(i) for i in range(6)]
    for system in systems:
        full = system.score(histories, texts)
        want = filter_lib.rank_items(full, histories, k=15)
        for c in (5, 40):
            ids, scores = system.ranker.top_k(histories, texts, 15, c, True)
            assert chunked.ranked_lists(ids, scores) == want, (system.name, c)
            rows = np.arange(6)[:, None]
            np.testing.assert_allclose(scores, full[rows, ids], rtol=1e-5, atol=1e-5)


def test_one_turn_rows_and_late_fusion_metrics_equal_unchunked():
    rng, emb = _tables(4)
    s = 30
    x = _ints(rng, (s, 3))
    target = rng.integers(1, N + 1, size=s).astype(np.int32)
    history = _histories(rng, rows=s)
    history[::4, -1] = target[::4]  # some targets in the history: misses when masked
    items = jnp.asarray(emb)
    text = lambda b, ids: b["x"] @ chunked.take(items, ids).T  # noqa: E731
    arrays = {"x": x, "target": target, "history": history}
    v = late_fusion.Vectors(
        h=_ints(rng, (s, 3)), x=x, item_emb=_ints(rng, (N + 1, 3)), item_text=emb,
        log_pop=np.log1p(rng.integers(0, 9, N + 1)).astype(np.float32), target=target,
        history=history,
    )  # fmt: skip
    w = late_fusion.Weights(0.7, 0.3, 0.1)
    for mask in (True, False):
        want = one_turn._rank(text, N + 1, arrays, mask, 0, batch_size=8)
        fused = late_fusion.vector_metrics(v, w, mask, 0, batch_size=8)
        assert want["hit@20"] > 0 and fused["hit@20"] > 0
        for c in (5,):
            assert one_turn._rank(text, N + 1, arrays, mask, c, batch_size=8) == want
            got = late_fusion.vector_metrics(v, w, mask, c, batch_size=8)
            assert got == pytest.approx(fused, abs=1e-6)


def test_a_negative_item_chunk_is_refused():
    with pytest.raises(multi_turn.MultiTurnConfigError, match="item_chunk"):
        multi_turn.MultiTurnSettings(item_chunk=-1)
