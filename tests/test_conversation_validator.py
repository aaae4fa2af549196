"""Tests of LatentCRS^V's validators and the LLM-only baseline against a local chat server.

The LLM validator: a well-formed ranking, malformed JSON, candidates that do not exist,
duplicates, an empty list, a timeout then success, a 429 then success, the cache reused with
zero new calls, token counts summed exactly from `usage`. The stand-in: its documented score on
hand-made embeddings. The LLM-only recommender: parsing, title resolution and misses.
"""

import dataclasses
import json

import numpy as np
import pytest

from latentcrs_jax.conversation import llm_recommender as lr
from latentcrs_jax.conversation import validator as va
from latentcrs_jax.conversation.llm_endpoint import EndpointSettings
from latentcrs_jax.data.items import make_item, pad_item
from latentcrs_jax.simulator.chat_client import ChatClient
from latentcrs_jax.simulator.tokens import TokenUsage

MOVIES = [
    ("Star Wars", 1977, ["Action", "Sci-Fi", "War"], []),
    ("Toy Story", 1995, ["Animation", "Children's", "Comedy"], ["pixar"]),
    ("Heat", 1995, ["Action", "Crime", "Thriller"], ["heist"]),
    ("Alien", 1979, ["Horror", "Sci-Fi"], []),
    ("Clueless", 1995, ["Comedy", "Romance"], []),
    ("Fargo", 1996, ["Comedy", "Crime", "Drama"], []),
    ("Heat", 1986, ["Action"], []),
]
CANDIDATES = [3, 1, 5, 2]  # ^F's order: Heat (1995), Star Wars, Clueless, Toy Story.
TURNS = [{"role": "user", "text": "A funny film please"}]


def _items():
    return [pad_item()] + [
        make_item(str(i), t, year=y, genres=g, tags=tags)
        for i, (t, y, g, tags) in enumerate(MOVIES, 1)
    ]


def _client(url, cache=None, **overrides):
    """A client as `llm_endpoint` configures it (greedy), with fast retries."""
    config = EndpointSettings(base_url=url, model="v-model", api_key_env="").chat_config()
    config = dataclasses.replace(config, backoff_base_s=0.001, **overrides)
    return ChatClient(config, cache_path=cache, sleep=lambda s: None)


def _validate(serve, reply, **client):
    server = serve(lambda n, body: ("ok", reply))
    v = va.LLMValidator(_items(), "movies", _client(server.url, **client))
    (result,) = v.rerank_many([TURNS], [CANDIDATES])
    return result, v, server


def test_prompt_lists_numbered_candidates_with_attributes(serve):
    result, v, server = _validate(serve, '{"ranking": [3]}')
    body = server.requests[0]
    assert body["temperature"] == 0.0 and body["model"] == "v-model"
    (message,) = body["messages"]
    assert message["role"] == "user"
    text = message["content"]
    assert "user: A funny film please\n" in text
    assert "[1] Heat (1995) | Action, Crime, Thriller | tags: heist\n" in text
    assert "[4] Toy Story (1995) | Animation, Children's, Comedy | tags: pixar\n" in text
    assert "[5]" not in text and '{"ranking": [' in text


def test_well_formed_ranking_puts_the_named_first(serve):
    result, v, _ = _validate(serve, '```json\n{"ranking": [3, 4]}\n```')
    assert result.status == "parsed"
    assert result.order == [5, 2, 3, 1]  # Named: Clueless, Toy Story; then ^F's order.
    assert v.summary()["parsed"] == 1


@pytest.mark.parametrize(
    "reply, order, unknown, dups",
    [
        ('{"ranking": [9, 0, 2, "Jaws", "Clueless"]}', [1, 5, 3, 2], 3, 0),  # non-existent
        ('{"ranking": [2, "2", "[2]", "Star Wars (1977)", 4]}', [1, 2, 3, 5], 0, 3),  # repeats
        ('["3. Clueless", {"id": 1}, {"title": \'x\'}]', [5, 3, 1, 2], 1, 0),  # bare list
        ("{'order': ['Toy Story (1995)', 'heat'],}", [2, 3, 1, 5], 0, 0),  # Python-style
    ],
)
def test_unknown_and_repeated_candidates_are_dropped_and_counted(
    serve, reply, order, unknown, dups
):
    result, v, _ = _validate(serve, reply)
    assert result.order == order
    assert len(result.unknown) == unknown and result.duplicates == dups
    assert sorted(result.order) == sorted(CANDIDATES)
    assert v.summary()["unknown"] == unknown and v.summary()["duplicates"] == dups


@pytest.mark.parametrize("reply", ["Sorry, I cannot rank these.", '{"ranking": [3, ', ""])
def test_malformed_reply_keeps_the_filter_order(serve, reply):
    result, v, _ = _validate(serve, reply)
    assert result.status == "unparsable" and result.order == CANDIDATES
    assert v.summary()["unparsable"] == 1 and v.summary()["parsed"] == 0


def test_empty_list_keeps_the_filter_order(serve):
    result, v, _ = _validate(serve, '{"ranking": []}')
    assert result.status == "empty" and result.order == CANDIDATES
    assert v.summary()["empty"] == 1


@pytest.mark.parametrize("first", [("hang", 2.0), ("error", 429, 0)])
def test_timeout_or_429_then_success(serve, first):
    server = serve(lambda n, body: first if n == 0 else ("ok", '{"ranking": [4]}'))
    v = va.LLMValidator(_items(), "movies", _client(server.url, timeout_s=0.5, max_retries=2))
    (result,) = v.rerank_many([TURNS], [CANDIDATES])
    assert result.order == [2, 3, 1, 5] and len(server.requests) == 2


def test_cache_reuse_makes_no_new_call_and_counts_the_same_tokens(serve, tmp_path):
    usage = {"prompt_tokens": 120, "completion_tokens": 7, "total_tokens": 127}
    server = serve(lambda n, body: ("ok", '{"ranking": [2]}', usage))
    cache = tmp_path / "validator_cache.jsonl"
    turns = [TURNS, TURNS + [{"role": "system", "text": "1 Heat"}], TURNS]
    first = va.LLMValidator(_items(), "movies", _client(server.url, cache))
    out1 = first.rerank_many(turns, [CANDIDATES] * 3)
    assert len(server.requests) == 2  # The third dialogue equals the first: sent once.
    # Every dialogue's call counts, the shared one for each (the cost of that variant).
    assert sum((r.usage for r in out1), TokenUsage()) == TokenUsage(3, 360, 21, reported=3)
    again = va.LLMValidator(_items(), "movies", _client(server.url, cache))
    out2 = again.rerank_many(turns, [CANDIDATES] * 3)
    assert len(server.requests) == 2 and again.client.cache_hits == 2
    assert [r.order for r in out2] == [r.order for r in out1]
    assert [r.usage for r in out2] == [r.usage for r in out1]


def test_token_counts_sum_exactly_from_usage(serve):
    def script(n, body):
        return (
            "ok",
            f'{{"ranking": [{n % 4 + 1}]}}',
            {"prompt_tokens": 100 + n, "completion_tokens": n},
        )

    server = serve(script)
    client = _client(server.url, max_concurrency=1)
    v = va.LLMValidator(_items(), "movies", client)
    turns = [[{"role": "user", "text": f"request {k}"}] for k in range(5)]
    results = v.rerank_many(turns, [CANDIDATES] * 5)
    got = sum((r.usage for r in results), TokenUsage())
    assert got == TokenUsage(5, 100 * 5 + 10, 10, reported=5)
    assert client.usage_total == got


def test_replies_without_usage_are_estimated_or_tokenized(serve, tmp_path):
    server = serve(lambda n, body: ("ok", '{"ranking": [1]}'))
    result, _, _ = _validate(serve, '{"ranking": [1]}')
    prompt = va.validator_prompt("movies", TURNS, [_items()[i] for i in CANDIDATES])
    # ceil(chars / 4) per text, 4 tokens per message and 3 for the reply's start.
    assert result.usage == TokenUsage(
        1, -(-len(prompt) // 4) + 4 + 3, -(-len('{"ranking": [1]}') // 4), estimated=1
    )
    from latentcrs_jax.text import weights

    tok_dir = weights.default_model_dir()  # A local tokenizer (WordPiece): counted, not estimated.
    client = _client(server.url, tokenizer=str(tok_dir))
    v = va.LLMValidator(_items(), "movies", client)
    (r,) = v.rerank_many([TURNS], [CANDIDATES])
    import tokenizers

    tok = tokenizers.Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    n = len(tok.encode(prompt, add_special_tokens=False).ids)
    assert r.usage == TokenUsage(
        1, n + 4 + 3, len(tok.encode('{"ranking": [1]}', add_special_tokens=False).ids), tokenized=1
    )


# ---------------------------------------------------------------------------------- stand-in
def test_standin_mixes_the_filter_rank_and_text_similarity():
    # Item embeddings on a circle; the dialogue embeds to angle 0.
    angles = {3: 3.0, 1: 2.0, 5: 0.1, 2: 1.0}
    emb = np.zeros((8, 2), np.float32)
    for i, a in angles.items():
        emb[i] = [np.cos(a), np.sin(a)]
    embed = lambda texts: np.tile(np.array([[1.0, 0.0]], np.float32), (len(texts), 1))  # noqa: E731
    sim = np.array([np.cos(angles[i]) for i in CANDIDATES])
    sim = (sim - sim.min()) / (sim.max() - sim.min())
    rank = 1 - np.arange(4) / 3
    for w in (0.0, 0.5, 0.9, 1.0):
        v = va.StandInValidator(embed, emb, weight=w)
        np.testing.assert_allclose(
            v.scores(embed(["x"])[0], CANDIDATES), w * rank + (1 - w) * sim, rtol=1e-5
        )
        (result,) = v.rerank_many([TURNS], [CANDIDATES], ["x"])
        expected = [
            CANDIDATES[p]
            for p in sorted(range(4), key=lambda p: (-(w * rank + (1 - w) * sim)[p], p))
        ]
        assert result.order == expected and result.status == "standin"
        assert result.usage == TokenUsage()
    assert (
        va.StandInValidator(embed, emb, 1.0).rerank_many([TURNS], [CANDIDATES], ["x"])[0].order
        == CANDIDATES
    )
    assert va.StandInValidator(embed, emb, 0.0).rerank_many([TURNS], [CANDIDATES], ["x"])[
        0
    ].order == [5, 2, 1, 3]
    with pytest.raises(ValueError, match="weight"):
        va.StandInValidator(embed, emb, 1.5)


def test_shown_last_and_reorder():
    assert va.reorder([7, 8, 9], [2]) == [9, 7, 8]
    assert va.shown_last([7, 8, 9, 6], [8, 6]) == [7, 9, 8, 6]


# --------------------------------------------------------------------------------- LLM-only
@pytest.mark.parametrize(
    "reply, titles",
    [
        ('{"titles": ["Heat (1995)", "Fargo"]}', ["Heat (1995)", "Fargo"]),
        (
            'Sure! ```json\n{"recommendations": [{"title": "Alien", "year": 1979}]}\n```',
            ["Alien (1979)"],
        ),
        ('["Clueless", "", "Fargo (1996)"]', ["Clueless", "Fargo (1996)"]),
        (
            "Here you go:\n1. Toy Story (1995)\n2) Clueless\n- Fargo",
            ["Toy Story (1995)", "Clueless", "Fargo"],
        ),
    ],
)
def test_parse_titles(reply, titles):
    assert lr.parse_titles(reply) == titles


@pytest.mark.parametrize("reply", ["", "I like films."])
def test_parse_titles_rejects_replies_without_titles(reply):
    with pytest.raises(lr.TitlesReplyError):
        lr.parse_titles(reply)


def test_llm_only_resolves_titles_and_counts_misses(serve):
    reply = json.dumps(
        {"titles": ["Heat (1995)", "Fargo", "Heat", "Jaws (1975)", "Star Warz", "heat 1995"]}
    )
    usage = {"prompt_tokens": 50, "completion_tokens": 20}

    def script(n, body):  # By content: the two requests are sent concurrently, in any order.
        funny = "user: A funny film please\n" in body["messages"][0]["content"]
        return ("ok", reply, usage) if funny else ("ok", "no idea")

    server = serve(script)
    rec = lr.LLMRecommender(_items(), "movies", _client(server.url), num_titles=6)
    first, bad = rec.recommend_many([TURNS, [{"role": "user", "text": "other"}]])
    prompts = [r["messages"][0]["content"] for r in server.requests]
    assert len(prompts) == 2 and all("recommend 6 movies" in p for p in prompts)
    assert sum("user: A funny film please\n" in p for p in prompts) == 1
    # "Heat" alone is ambiguous (1986 and 1995): a miss; "Jaws" is not in the catalogue;
    # "Star Warz" is a confident fuzzy match; the repeated Heat (1995) is kept once.
    assert first.items == [3, 6, 1] and first.unresolved == ["Heat", "Jaws (1975)"]
    assert first.usage == TokenUsage(1, 50, 20, reported=1)
    assert bad.status == "unparsable" and bad.items == []
    s = rec.summary()
    assert s["titles"] == 6 and s["unresolved"] == 2 and s["unparsable"] == 1
    assert s["resolved_exact"] == 3 and s["resolved_fuzzy"] == 1
    assert s["unresolved_rate"] == pytest.approx(2 / 6) and "jaws (1975)" in s["top_unresolved"]


def test_choose_shown_masks_history_and_pushes_back_shown():
    assert lr.choose_shown([4, 3, 2, 1, 3], 3, shown=[4], history=[2]) == [3, 1, 4]
    assert lr.choose_shown([], 3, shown=[]) == []


# ------------------------------------------------------------------------- one-turn ^V rows
def test_one_turn_rerank_keeps_the_metrics_at_weight_one_and_follows_the_text_at_zero():
    import jax.numpy as jnp

    from latentcrs_jax.evaluation import one_turn_validated as otv
    from latentcrs_jax.evaluation import ranking

    rng = np.random.default_rng(0)
    b, n_items, d = 64, 40, 3
    scores = rng.normal(size=(b, n_items + 1)).astype(np.float32)
    scores[:, 5] = scores[:, 6]  # A tie: the lower id first, as the metrics' rule.
    history = rng.integers(0, n_items + 1, size=(b, 4)).astype(np.int32)
    target = rng.integers(1, n_items + 1, size=b).astype(np.int32)
    x = rng.normal(size=(b, d)).astype(np.float32)
    items = rng.normal(size=(n_items + 1, d)).astype(np.float32)
    ids, sc = otv.top_lists(scores, history, 20)
    sums = ranking.full_ranking_metrics(
        jnp.asarray(scores), jnp.asarray(target), jnp.asarray(history)
    )
    expected = {k: float(s) / float(c) for k, (s, c) in sums.items()}
    for n in (5, 20):
        same = va.StandInValidator(None, items, weight=1.0)

        def by(weight_validator):
            def order(r, cands):
                s = weight_validator.scores(x[r], cands)
                return [cands[p] for p in sorted(range(len(cands)), key=lambda p: (-s[p], p))]

            return order

        got = otv.metrics(*otv.rerank_top(ids, sc, n, by(same)), target)
        assert got == pytest.approx(expected)
        text_only = va.StandInValidator(None, items, weight=0.0)
        new_ids, new_sc = otv.rerank_top(ids, sc, n, by(text_only))
        for row in range(b):
            top = list(ids[row, :n])
            assert sorted(new_ids[row, :n]) == sorted(top)  # The same candidates,
            sims = items[new_ids[row, :n]] @ x[row]
            assert np.all(np.diff(sims) <= 1e-6)  # now by text similarity,
            np.testing.assert_array_equal(new_ids[row, n:], ids[row, n:])  # the rest as ranked.
            assert set(new_sc[row, :n]) == set(sc[row, :n])


def test_fewer_than_two_candidates_make_no_call(serve):
    server = serve(lambda n, body: ("ok", '{"ranking": [2, 1]}'))
    v = va.LLMValidator(_items(), "movies", _client(server.url))
    out = v.rerank_many([TURNS] * 3, [[], [4], [4, 6]])
    assert [r.order for r in out] == [[], [4], [6, 4]]
    assert [r.status for r in out] == ["skipped", "skipped", "parsed"]
    assert len(server.requests) == 1 and out[0].usage == TokenUsage()


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_workdir")  # with the other users of the session workdirs
def test_one_turn_rows_are_kept_until_what_they_depend_on_changes(
    tiny_encoded_workdir, tmp_path, monkeypatch
):
    import shutil
    import types

    from configs import tiny
    from latentcrs_jax.evaluation import one_turn_validated as otv
    from latentcrs_jax.text import stage as encode_stage

    workdir = tmp_path / "w"
    shutil.copytree(tiny_encoded_workdir, workdir)
    x = encode_stage.load(workdir, "test")
    n_items = encode_stage.load(workdir, "items").shape[0] - 1
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(len(x), n_items + 1)).astype(np.float32)
    target = rng.integers(1, n_items + 1, size=len(x)).astype(np.int32)
    calls = []

    def fake_lists(config, wd, seed, emb, k):
        calls.append(seed)
        ids, sc = otv.top_lists(scores, np.zeros((len(x), 1), np.int32), k)
        return ids, sc, target, types.SimpleNamespace()

    monkeypatch.setattr(otv, "_prior_lists", fake_lists)
    config = tiny.get_config()
    first = otv.rows(config, workdir)
    label = "LatentCRS^V, stand-in validator (no LLM), top 20"
    assert list(first) == [label] and calls == [0]
    assert otv.rows(config, workdir) == first and calls == [0]  # From the file.
    config.multi_turn.validator_standin_weight = 1.0  # Another setting: computed again,
    same = otv.rows(config, workdir)
    assert calls == [0, 0]
    ids, sc = otv.top_lists(scores, np.zeros((len(x), 1), np.int32), 20)
    expected = otv.metrics(ids, sc, target)  # and at w = 1 it is the ranking's own metrics.
    assert {m: v[0] for m, v in same[label].items()} == pytest.approx(expected)
    config.multi_turn.systems = ("latentcrs_f",)  # No ^V row asked for: none.
    assert otv.rows(config, workdir) == {}
