"""Tests of the LLM dialogue-state tracker against a local OpenAI-protocol server.

Covers the prompt (docs/method.md 5, step 1), lenient JSON parsing, mapping onto the attribute
vocabulary, the rule fallback on garbage, the response cache, the settings and their start-up
errors, and the wiring into the multi-turn protocol (scripted and as the stage on tiny data)
and the chat.
"""

import dataclasses
import json
import logging
import re
import types

import numpy as np
import pytest

from configs import base
from latentcrs_jax import pipeline
from latentcrs_jax.conversation import (
    chat,
    multi_turn,
    multi_turn_results,
    multi_turn_stage,
)
from latentcrs_jax.conversation import llm_tracker as lt
from latentcrs_jax.conversation import tracker_reply as tr
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.state import ConversationState
from latentcrs_jax.conversation.transcripts import read_transcripts
from latentcrs_jax.data.items import make_item, pad_item
from latentcrs_jax.evaluation.recommenders import Recommender
from latentcrs_jax.simulator.chat_client import ChatClient, ChatConfig, EndpointError
from latentcrs_jax.simulator.state import Utterance

MOVIES = [
    ("Star Wars", 1977, ["Action", "Sci-Fi", "War"], []),
    ("Toy Story", 1995, ["Animation", "Children's", "Comedy"], ["pixar"]),
    ("Heat", 1995, ["Action", "Crime", "Thriller"], ["heist"]),
    ("Alien", 1979, ["Horror", "Sci-Fi"], []),
    ("Clueless", 1995, ["Comedy", "Romance"], []),
    ("Fargo", 1996, ["Comedy", "Crime", "Drama"], []),
]


def _items():
    return [pad_item()] + [
        make_item(str(i), t, year=y, genres=g, tags=tags)
        for i, (t, y, g, tags) in enumerate(MOVIES, 1)
    ]


@pytest.fixture(scope="module")
def vocab():
    return FeatureVocab(_items(), "movies")


def _reply(features=(), intents=(), excluded=None):
    obj = {"human intents": list(intents), "item features": list(features)}
    if excluded is not None:
        obj["excluded features"] = list(excluded)
    return json.dumps(obj)


def _client(url, cache=None, **overrides):
    fields = dict(base_url=url, model="tracker-model", api_key_env="", backoff_base_s=0.001)
    fields.update(overrides)
    return ChatClient(ChatConfig(**fields), cache_path=cache, sleep=lambda s: None)


def _tracker(url, vocab, cache=None, **kwargs):
    return lt.LLMStateTracker(vocab, "movies", _client(url, cache), **kwargs)


def _state(*user_texts):
    s = ConversationState(history=[2])
    for k, text in enumerate(user_texts):
        if k:
            s.add_system_turn("The recommended items are: 1 Heat", [3])
        s.add_user_turn(text)
    return s


def _conversation(body):
    """The dialogue part of a tracker request."""
    return body["messages"][0]["content"].split("conversation_history: ", 1)[1]


# ----------------------------------------------------------------------------------- prompt
def test_prompt_follows_the_paper(vocab):
    labels = lt.prompt_features(vocab)
    # Genres (most frequent first, ties by label), then decades; no years or tags.
    assert labels[:4] == ["Comedy", "Action", "Crime", "Sci-Fi"]
    assert labels[-2:] == ["1990s", "1970s"] and "1995" not in labels and "heist" not in labels
    assert lt.prompt_features(vocab, max_features=3) == labels[:3]
    turns = [
        {"role": "user", "text": "Hi! A  funny\nmovie, no horror."},
        {"role": "system", "text": "The recommended items are: 1 Clueless", "items": [5]},
        {"role": "user", "text": "Older please."},
    ]
    prompt = lt.tracker_prompt("movies", labels, turns)
    assert prompt.startswith("You are a conversational movie recommendation assistant")
    assert "Hard descriptions: mandatory requirements" in prompt
    assert "Soft descriptions: further preferences" in prompt
    assert "The candidate item features are: " + ", ".join(labels) + "." in prompt
    assert "Only list features the user explicitly mentioned" in prompt
    assert "Return only the JSON." in prompt
    assert '"human intents": [' in prompt and '"item features": [' in prompt
    assert '"excluded features": [' in prompt
    assert prompt.endswith(
        "conversation_history: user: Hi! A funny movie, no horror.\n"
        "assistant: The recommended items are: 1 Clueless\n"
        "user: Older please.\n"
    )
    paper = lt.tracker_prompt("movies", labels, turns, excluded_features=False)
    assert "excluded" not in paper and '"item features": [' in paper
    assert "conversational video game recommendation" in lt.tracker_prompt("video games", [], turns)
    assert "conversational CD recommendation" in lt.tracker_prompt("CDs", [], turns)


def test_request_is_one_user_message_sent_greedily(serve, vocab):
    server = serve(lambda n, body: ("ok", _reply(["Comedy"])))
    settings = lt.TrackerSettings(kind="llm", base_url=server.url, model="tracker-model")
    tracker = lt.make_tracker(dataclasses.replace(settings, api_key_env=""), vocab, "movies")
    tracker.update([_state("something funny")])
    (body,) = server.requests
    assert body["model"] == "tracker-model" and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert _conversation(body) == "user: something funny\n"


# ---------------------------------------------------------------------------------- parsing
PARSE_CASES = [
    (
        '{"human intents": ["a fun night"], "item features": ["Comedy"]}',
        (["a fun night"], ["Comedy"], []),
    ),
    (  # A code fence.
        '```json\n{"human intents": [], "item features": ["Crime", "Drama"]}\n```',
        ([], ["Crime", "Drama"], []),
    ),
    (  # Prose around; other key spellings; strings instead of lists.
        'Sure! Here:\n{"Human_Intents": "cosy", "item_features": "Comedy, Crime; War"}\nEnjoy.',
        (["cosy"], ["Comedy", "Crime", "War"], []),
    ),
    (  # Python quotes and trailing commas.
        "{'human intents': ['x',], 'item features': ['War',],}",
        (["x"], ["War"], []),
    ),
    (  # The first object lacks the key; nested dicts and numbers.
        '{"note": 1} and {"item features": {"genre": ["Drama"], "year": 1995}}',
        ([], ["Drama", "1995"], []),
    ),
    (
        '{"item features": null, "human intents": [["a"], 2]}',
        (["a", "2"], [], []),
    ),
    (
        '{"item features": ["Comedy", true], "excluded features": "Horror"}',
        ([], ["Comedy"], ["Horror"]),
    ),
]


@pytest.mark.parametrize("reply, expected", PARSE_CASES)
def test_parse_reply_is_lenient(reply, expected):
    parsed = tr.parse_reply(reply)
    assert (parsed.intents, parsed.features, parsed.excluded) == expected


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("", "empty"),
        ("You seem to like comedies.", "no JSON object"),
        ('{"human intents": ["fun"]}', "item features"),
        ('{"item features": ["Comedy"', "no JSON object"),
    ],
)
def test_parse_reply_rejects_replies_without_features(reply, reason):
    with pytest.raises(tr.ReplyParseError, match=reason):
        tr.parse_reply(reply)


def test_as_strings():
    assert tr.as_strings("Comedy, Drama", split=True) == ["Comedy", "Drama"]
    assert tr.as_strings("fun, light", split=False) == ["fun, light"]
    assert tr.as_strings([1995, 2.5, None, False, {"a": ["x"]}], split=True) == [
        "1995",
        "2.5",
        "x",
    ]


# ---------------------------------------------------------------------------------- mapping
@pytest.mark.parametrize(
    "name, features, negated",
    [
        ("Comedy", [("genre", "comedy")], False),
        ("COMEDIES", [("genre", "comedy")], False),
        ("sci-fi", [("genre", "sci fi")], False),
        ("Science Fiction", [("genre", "sci fi")], False),
        ("Children's", [("genre", "children")], False),
        ("kids", [("genre", "children")], False),
        ("1990s", [("decade", "1990s")], False),
        ("90s movies", [("decade", "1990s")], False),
        ("the nineties", [("decade", "1990s")], False),
        ("1995", [("year", "1995")], False),
        ("Heist films", [("tag", "heist")], False),
        ("no horror", [("genre", "horror")], True),
        ("movies like Star Wars", [], False),  # Not the genre War: "star" is not a filler.
        ("Cyberpunk", [], False),
    ],
)
def test_feature_mapper(vocab, name, features, negated):
    assert tr.FeatureMapper(vocab).map(name) == (features, negated)


def test_reply_replaces_the_state_and_counts_unknown_features(serve, vocab):
    replies = [
        _reply(["Comedies", "Cyberpunk", "no horror"], ["a light evening"]),
        _reply(["Crime", "1990s"], ["a caper"], excluded=["Comedy", "Romance", "Crime"]),
    ]
    server = serve(lambda n, body: ("ok", replies[n]))
    tracker = _tracker(server.url, vocab)
    state = _state("a comedy, not horror")
    (r,) = tracker.update([state])
    assert r.fallback is None and r.unknown == ["Cyberpunk"]
    assert state.included == [("genre", "comedy")] and state.excluded == [("genre", "horror")]
    assert state.intents == ["a light evening"]
    assert state.ranking_text("intents") == "a light evening"
    state.add_system_turn("The recommended items are: 1 Clueless", [5])
    state.add_user_turn("actually a crime film from the 90s, not a comedy")
    tracker.update([state])
    # The model's reading of the whole dialogue replaces the lists; a feature in both lists
    # (Crime) is contradictory and dropped from both.
    assert state.included == [("decade", "1990s")]
    assert state.excluded == [("genre", "comedy"), ("genre", "romance")]
    summary = tracker.summary()
    assert summary["parsed"] == 2 and summary["features_unknown"] == 1
    assert summary["top_unknown"] == ["cyberpunk"] and summary["fallback_unparsable"] == 0


# --------------------------------------------------------------------------------- fallback
def test_garbage_reply_falls_back_to_the_rules_for_that_turn(serve, vocab, caplog):
    replies = [_reply(["Crime"], ["tense"]), "I think you would love some comedies!"]
    server = serve(lambda n, body: ("ok", replies[n]))
    tracker = _tracker(server.url, vocab)
    state = _state("a crime film")
    tracker.update([state])
    state.add_system_turn("The recommended items are: 1 Heat", [3])
    state.add_user_turn("make it a comedy from 1995, no horror, unlike Toy Story")
    with caplog.at_level(logging.WARNING):
        (r,) = tracker.update([state], [["Toy Story"]])
    assert r.fallback == "unparsable" and r.reply == replies[1]
    assert "unparsable reply" in caplog.text
    # The rule matcher read the newest turn (liked titles blanked) and folded it in.
    assert state.included == [("genre", "crime"), ("genre", "comedy"), ("year", "1995")]
    assert state.excluded == [("genre", "horror")]
    assert state.intents == [] and state.ranking_text("intents").startswith("make it a comedy")
    assert tracker.summary()["fallback_unparsable"] == 1


def test_endpoint_failure_raises_or_falls_back(serve, vocab):
    server = serve(lambda n, body: ("error", 500, None))
    client = _client(server.url, max_retries=0)
    with pytest.raises(EndpointError):
        lt.LLMStateTracker(vocab, "movies", client).update([_state("a comedy")])
    tracker = lt.LLMStateTracker(vocab, "movies", client, fallback_on_endpoint_error=True)
    state = _state("a comedy")
    (r,) = tracker.update([state])
    assert r.fallback == "endpoint" and state.included == [("genre", "comedy")]
    assert tracker.summary()["fallback_endpoint"] == 1


# ------------------------------------------------------------------------------------ cache
def test_batch_sends_identical_dialogues_once_and_the_cache_repeats_no_call(serve, vocab, tmp_path):
    def script(n, body):
        return ("ok", _reply(["Comedy"] if "funny" in _conversation(body) else ["Crime"]))

    server = serve(script)
    cache = tmp_path / "tracker.jsonl"
    texts = ["something funny", "a heist", "something funny"]
    states = [_state(t) for t in texts]
    tracker = _tracker(server.url, vocab, cache, excluded_features=False)
    tracker.update(states)
    assert len(server.requests) == 2
    comedy, crime = [("genre", "comedy")], [("genre", "crime")]
    assert [s.included for s in states] == [comedy, crime, comedy]
    again = [_state(t) for t in texts]
    tracker2 = _tracker(server.url, vocab, cache, excluded_features=False)
    tracker2.update(again)
    assert len(server.requests) == 2 and tracker2.client.cache_hits == 2
    assert [s.to_dict() for s in again] == [s.to_dict() for s in states]


# --------------------------------------------------------------------------------- settings
def test_settings_and_start_up_errors(monkeypatch, tmp_path):
    assert lt.make_client(lt.TrackerSettings()) is None  # Rules: keyless.
    with pytest.raises(lt.TrackerConfigError, match="tracker_base_url and .*tracker_model"):
        lt.TrackerSettings(kind="llm")
    with pytest.raises(lt.TrackerConfigError, match="state_tracker must be one of"):
        lt.TrackerSettings(kind="gpt")
    section = base.get_multi_turn_config()
    assert section.state_tracker == "rules"
    settings = multi_turn.MultiTurnSettings.from_config(section)
    assert settings.tracker() == lt.TrackerSettings()
    section.state_tracker = "llm"
    with pytest.raises(multi_turn.MultiTurnConfigError, match="tracker_base_url"):
        multi_turn.MultiTurnSettings.from_config(section)
    with pytest.raises(multi_turn.MultiTurnConfigError, match="state_tracker='llm'"):
        multi_turn.MultiTurnSettings(ranking_text="intents")
    # A remote endpoint without its key fails before any work.
    monkeypatch.delenv("TRACKER_TEST_KEY", raising=False)
    config = base.get_base_config()
    config.multi_turn.state_tracker = "llm"
    config.multi_turn.tracker_base_url = "https://api.example.com/v1"
    config.multi_turn.tracker_model = "m"
    config.multi_turn.tracker_api_key_env = "TRACKER_TEST_KEY"
    with pytest.raises(multi_turn.MultiTurnConfigError, match="TRACKER_TEST_KEY is not set"):
        multi_turn_stage.preflight(config)
    with pytest.raises(multi_turn.MultiTurnConfigError, match="TRACKER_TEST_KEY is not set"):
        pipeline.run(config, tmp_path / "w")  # before the first stage
    assert not (tmp_path / "w").exists()
    monkeypatch.setenv("TRACKER_TEST_KEY", "sk-x")
    assert multi_turn_stage.preflight(config).tracker().model == "m"


# ------------------------------------------------------------------------ multi-turn wiring
class _Ranker:
    """Item i scores -i (item 1 first)."""

    def score(self, histories, texts):
        return np.tile(-np.arange(len(MOVIES) + 1, dtype=np.float32), (len(texts), 1))


class _Simulator:
    """Always replies "I want something to laugh at." (the rules alone read no Comedy there)."""

    def respond_many(self, states, recommended, system_texts):
        out = []
        for state, rec, text in zip(states, recommended, system_texts):
            new = state.copy()
            new.turns.append({"role": "system", "text": text, "items": list(rec)})
            new.turns.append({"role": "user", "text": "I want something to laugh at.", "items": []})
            out.append((new, Utterance("I want something to laugh at.")))
        return out


def test_multi_turn_uses_the_llm_features_with_one_batch_per_round(serve, vocab):
    def script(n, body):
        conv = _conversation(body)
        if "laugh" in conv:
            return ("ok", "```json\n" + _reply(["Comedy"], ["a laugh"]) + "\n```")
        return ("ok", "no idea") if "hello" in conv else ("ok", _reply([], ["anything"]))

    server = serve(script)
    tracker = _tracker(server.url, vocab)
    settings = multi_turn.MultiTurnSettings(
        systems=("latentcrs_f", "latentcrs"),
        rounds=3,
        top_k=1,
        candidates=6,
        mask_history=False,
        state_tracker="llm",
        tracker_base_url=server.url,
        tracker_model="tracker-model",
        ranking_text="intents",
    )
    calls = []
    requests_per_round = []

    def score(histories, texts):
        calls.append(list(texts))
        requests_per_round.append(len(server.requests))
        return _Ranker().score(histories, texts)

    results, dialogues = multi_turn_results.evaluate(
        {"latentcrs": Recommender("latentcrs", score)},
        np.zeros((2, 3), np.int32),
        np.array([5, 6], np.int32),  # Clueless and Fargo: comedies ranked 5th and 6th.
        ["a", "b"],
        [Utterance("hello there"), Utterance("hi")],
        _Simulator(),
        _items(),
        "movies",
        settings,
        tracker=tracker,
    )
    # Identical dialogues are sent once: both systems start alike and show the same item in
    # round 1; from round 2 the filter shows other items, so the dialogues differ. One batch
    # per round, before the round's scoring; none after the last round.
    assert requests_per_round[::2] == [2, 4, 8] and len(server.requests) == 8
    # Sample a's first reply is garbage (one request, one fallback per system's dialogue): the
    # rules read "hello there" (no feature).
    assert tracker.summary()["fallback_unparsable"] == 2
    f = dialogues["latentcrs_f"]
    assert f[0].state.included == [("genre", "comedy")]
    assert f[0].state.turns[3]["text"].startswith("We infer you like: Comedy.")
    # The filter lifts the LLM's Comedy: item 2 (Toy Story) first, then 5, then 6.
    assert [t["items"] for t in f[1].state.turns if t["role"] == "system"] == [[1], [2], [5]]
    assert [d.success_round for d in f] == [3, None]
    assert [d.success_round for d in dialogues["latentcrs"]] == [None, None]
    # Ranking text "intents": the LLM's intents, or the last user turn on a fallback.
    assert calls[0] == ["hello there", "anything"] and calls[2] == ["a laugh", "a laugh"]


# ------------------------------------------------------------------------ the stage, tiny data
@pytest.fixture(scope="module")
def tiny_simulated_workdir(tmp_path_factory):
    from configs import tiny
    from latentcrs_jax import pipeline

    workdir = tmp_path_factory.mktemp("tiny_tracker")
    pipeline.run(tiny.get_config(), workdir, until="simulate")
    return workdir


def test_stage_with_the_llm_tracker_resumes_from_its_cache(
    serve, tiny_simulated_workdir, monkeypatch
):
    from configs import tiny
    from latentcrs_jax.data import dataset
    from latentcrs_jax.evaluation import recommenders

    workdir = tiny_simulated_workdir
    ds = dataset.load(workdir / "data")
    n = ds.num_items + 1
    rules = FeatureVocab(ds.items, ds.domain)

    def script(k, body):  # Every 5th request is garbage; the others state the rule features.
        if k % 5 == 4:
            return ("ok", "Sorry, I cannot help with that.")
        users = re.findall(r"^user: (.*)$", _conversation(body), re.MULTILINE)
        stated = rules.stated(" ".join(users))
        return ("ok", _reply([rules.label(f) for f in stated.included], users[-1:]))

    server = serve(script)

    def score(histories, texts):
        return np.tile(np.sin(np.arange(n, dtype=np.float32)), (len(texts), 1))

    def fake_load(config, wd, seed=None, wrap_embed=None):
        embed = lambda texts: np.zeros((len(texts), 2), np.float32)  # noqa: E731
        systems = {"latentcrs": Recommender("latentcrs", score)}
        return systems, types.SimpleNamespace(dataset=ds, embed=wrap_embed(embed))

    monkeypatch.setattr(recommenders, "load_systems", fake_load)
    config = tiny.get_config()
    mt = config.multi_turn
    mt.num_samples, mt.rounds, mt.systems = 8, 2, ("latentcrs_f",)
    mt.transcripts_per_system = 8
    mt.state_tracker, mt.tracker_base_url, mt.tracker_model = "llm", server.url, "tm"
    md = multi_turn_stage.run(config, workdir)
    assert "LLM (tm) state tracker" in md and "| LatentCRS^F |" in md
    made = len(server.requests)
    assert 8 <= made <= 16  # One per sample and round (fewer once a dialogue succeeds).
    out = json.loads((workdir / "eval" / "multi_turn.json").read_text())
    stats = out["state_tracker"]
    transcripts = read_transcripts(workdir / "eval" / "transcripts" / "latentcrs_f.jsonl")
    user_turns = sum(t["role"] == "user" for tr in transcripts for t in tr.state.turns)
    assert stats["parsed"] + stats["fallback_unparsable"] == user_turns  # Every turn tracked.
    assert stats["fallback_unparsable"] >= 1 and stats["requests"] == made
    assert any(tr.state.intents for tr in transcripts)
    assert (multi_turn_stage.stage_dir(workdir) / "tracker_cache.jsonl").is_file()
    # Re-run (outputs removed, same fingerprint): every reply comes from the cache.
    (workdir / "eval" / "multi_turn.md").unlink()
    assert multi_turn_stage.run(config, workdir).split("\n", 1)[1] == md.split("\n", 1)[1]
    assert len(server.requests) == made


def test_stage_stops_at_start_without_an_api_key(tiny_simulated_workdir, monkeypatch):
    from configs import tiny
    from latentcrs_jax.evaluation import recommenders

    def fail(*args, **kwargs):
        raise AssertionError("load_systems called before the key check")

    monkeypatch.setattr(recommenders, "load_systems", fail)
    monkeypatch.delenv("TRACKER_TEST_KEY", raising=False)
    config = tiny.get_config()
    mt = config.multi_turn
    mt.state_tracker, mt.tracker_base_url, mt.tracker_model = "llm", "https://x.example/v1", "m"
    mt.tracker_api_key_env = "TRACKER_TEST_KEY"
    with pytest.raises(multi_turn.MultiTurnConfigError, match="TRACKER_TEST_KEY"):
        multi_turn_stage.run(config, tiny_simulated_workdir)


# ------------------------------------------------------------------------------------- chat
def test_chat_reads_features_through_the_tracker(serve, vocab):
    replies = [_reply(["Comedy"], ["something to laugh at"]), "???"]
    server = serve(lambda n, body: ("ok", replies[min(n, 1)]) if n < 2 else ("error", 500, None))
    items = _items()
    base_scores = -np.arange(len(items), dtype=np.float32)
    rec = Recommender("latentcrs", lambda h, t: np.tile(base_scores, (len(t), 1)))
    tracker = lt.LLMStateTracker(
        vocab, "movies", _client(server.url, max_retries=0), fallback_on_endpoint_error=True
    )
    session = chat.ChatSession({"latentcrs": rec}, items, "movies", tracker=tracker)
    out = session.handle("I want to laugh tonight")
    assert "We infer you like: Comedy" in out
    assert out.splitlines()[1].startswith("  1. Toy Story")
    out = session.handle("not these, maybe a heist")  # "???": the rules read this turn.
    assert "We infer you like: Comedy, heist" in out
    out = session.handle("from 1995")  # The endpoint fails: rules, with a note.
    assert out.startswith("(The language model is unreachable")
    assert session.state.included[-1] == ("year", "1995")
    assert len(server.requests) == 3
