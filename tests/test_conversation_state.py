"""Tests of the recommender-side dialogue state and the transcript round trip."""

import json

import pytest

from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.state import ConversationState
from latentcrs_jax.conversation.transcripts import Transcript, read_transcripts, write_transcripts
from latentcrs_jax.data.items import make_item


@pytest.fixture(scope="module")
def vocab():
    items = [
        make_item("", ""),
        make_item("1", "Alien", year=1979, genres=["Horror", "Sci-Fi"]),
        make_item("2", "Heat", year=1995, genres=["Action", "Crime"]),
        make_item("3", "Toy Story", year=1995, genres=["Animation", "Comedy"]),
    ]
    return FeatureVocab(items, "movies")


def test_features_accumulate_and_later_mentions_override(vocab):
    s = ConversationState(history=[1])
    s.add_user_turn("a horror movie from the 90s", vocab)
    assert s.included == [("genre", "horror"), ("decade", "1990s")]
    s.add_user_turn("actually no horror; a comedy", vocab)
    assert s.included == [("decade", "1990s"), ("genre", "comedy")]
    assert s.excluded == [("genre", "horror")]
    s.add_user_turn("ok horror is fine after all", vocab)
    assert ("genre", "horror") in s.included and s.excluded == []


def test_ranking_text_modes_and_unranked_turns(vocab):
    s = ConversationState()
    assert s.ranking_text() == "" and s.ranking_text("last") == ""
    s.add_user_turn("I want  a comedy.", vocab)
    s.add_system_turn("The recommended items are: 1 Toy Story (1995)", [3])
    s.add_user_turn("not these", vocab, ranked=False)
    s.add_user_turn("from the 90s", vocab)
    assert s.ranking_text() == "I want a comedy. from the 90s"
    assert s.ranking_text("last") == "from the 90s"
    assert s.user_texts == ["I want  a comedy.", "from the 90s"]
    assert s.rounds == 1
    with pytest.raises(ValueError, match="dialogue"):
        s.ranking_text("everything")


def test_ranking_text_max_chars_keeps_the_newest_words():
    s = ConversationState()
    for t in ["first " * 10, "second " * 10, "third"]:
        s.add_user_turn(t.strip())
    assert s.ranking_text(max_chars=80).endswith("third")
    assert not s.ranking_text(max_chars=80).startswith("first")
    assert s.ranking_text(max_chars=3) == "thi"


def test_shown_items_are_unique_in_order():
    s = ConversationState()
    s.add_system_turn("a", [5, 3, 5])
    s.add_system_turn("b", [3, 7])
    assert s.shown == [5, 3, 7]
    assert s.turns[0]["items"] == [5, 3, 5]


def test_state_and_transcript_round_trip(tmp_path, vocab):
    s = ConversationState(history=[2, 1])
    s.add_user_turn("no horror, something from 1995 — ça va? 😀", vocab)
    s.add_system_turn("We infer you like: 1995 (not: Horror). ...", [3, 2])
    s.add_user_turn("not these", vocab, ranked=False)
    assert ConversationState.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    rows = [
        Transcript("latentcrs_f", "LatentCRS^F", 7, "u1_test", 3, "Toy Story (1995)", 1, s),
        Transcript("latentcrs_f", "LatentCRS^F", 9, "u2_test", 2, "Heat (1995)", None, s),
    ]
    path = tmp_path / "t" / "latentcrs_f.jsonl"
    write_transcripts(path, rows)
    assert read_transcripts(path) == rows
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    write_transcripts(path, [])
    assert read_transcripts(path) == []
