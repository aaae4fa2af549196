"""Tests of the template user simulator (latentcrs_jax/simulator/template.py and api.py)."""

import json
import re

import numpy as np
import pytest
from conftest import shared_path

from configs import base, videogames
from latentcrs_jax.data import items as items_lib
from latentcrs_jax.data import prepare
from latentcrs_jax.simulator import (
    DialogueState,
    TemplateSimulator,
    attributes,
    find_leak,
    phrases,
    simulate_first_turns,
    template,
    utterance_stats,
)


@pytest.fixture(scope="module")
def embedded():
    """The embedded default dataset (bundled ml-latest-small) through the data layer."""
    cfg = base.get_base_config()
    out = prepare.build(cfg.data)
    return out["items"], out["splits"]["test"], cfg.data.domain


def _keys(n, split="test"):
    return [f"{split}/{i}" for i in range(n)]


def _norm(text):
    """Independent normalisation: lower case, no apostrophes or accents-insensitive punctuation."""
    text = text.lower().replace("'", "")
    return " " + " ".join(re.sub(r"[^\w]+", " ", text).split()) + " "


def _utterances(embedded, **kwargs):
    items, test, domain = embedded
    section = base.get_simulator_config()
    for k, v in kwargs.items():
        section[k] = v
    return simulate_first_turns(
        test.history, test.target, _keys(len(test.target)), items, domain, section
    )


def test_no_leak_over_every_test_sample_of_the_embedded_dataset(embedded):
    items, test, _ = embedded
    utts = _utterances(embedded)
    assert len(utts) == len(test.target) > 500
    for utt, target in zip(utts, test.target):
        item = items[int(target)]
        assert find_leak(utt.text, item) is None, (item["title"], utt.text)
        assert find_leak(utt.text, item, strict=True, allow=[v for _, v in utt.conditions]) is None
        # Independent check: no title variant appears as a phrase, unless it is a stated value.
        stated = {_norm(v) for _, v in utt.conditions}
        for name in {item["title"], attributes.display_title(item["title"])}:
            if _norm(name) not in stated:
                assert _norm(name) not in _norm(utt.text), (name, utt.text)


def test_conditions_are_bounded_true_attributes_and_mentioned(embedded):
    items, test, domain = embedded
    utts = _utterances(embedded)
    counts = [len(u.conditions) for u in utts]
    assert max(counts) == 3 and min(counts) >= 1
    assert 1.5 < np.mean(counts) < 2.5
    for utt, target in zip(utts, test.target):
        pool = attributes.item_conditions(items[int(target)], domain)
        assert set(utt.conditions) <= set(pool)
        assert sum(f in ("decade", "year") for f, _ in utt.conditions) <= 1
        for field, value in utt.conditions:
            if field in ("genre", "tag"):
                assert value.lower().split()[0][:5] in utt.text.lower(), (value, utt.text)
    one = _utterances(embedded, max_conditions=1)
    assert max(len(u.conditions) for u in one) == 1
    none = _utterances(embedded, max_conditions=0)
    assert all(u.conditions == [] for u in none)


def test_history_mentions(embedded):
    items, test, _ = embedded
    utts = _utterances(embedded, history_mention_prob=1.0)
    mentioned = 0
    for utt, hist, target in zip(utts, test.history, test.target):
        if utt.history_item is None:
            continue
        mentioned += 1
        assert utt.history_item in set(hist.tolist()) and utt.history_item != int(target)
        assert attributes.display_title(items[utt.history_item]["title"]) in utt.text
    assert mentioned > 0.9 * len(utts)
    assert all(u.history_item is None for u in _utterances(embedded, history_mention_prob=0.0))
    rate = utterance_stats(_utterances(embedded))["history_mention_rate"]
    assert 0.4 < rate < 0.6


def test_deterministic_and_independent_of_call_order(embedded):
    items, test, domain = embedded
    sim = TemplateSimulator(items, domain, seed=3)
    n = 60
    forward = [sim.first_turn(test.history[i], test.target[i], f"k{i}") for i in range(n)]
    fresh = TemplateSimulator(items, domain, seed=3)
    backward = [
        fresh.first_turn(test.history[i], test.target[i], f"k{i}") for i in reversed(range(n))
    ]
    assert [u.to_dict() for u in forward] == [u.to_dict() for u in reversed(backward)]
    other = TemplateSimulator(items, domain, seed=4)
    changed = sum(
        other.first_turn(test.history[i], test.target[i], f"k{i}").text != forward[i].text
        for i in range(n)
    )
    assert changed > 0.9 * n
    # The functional form gives the same utterance.
    u = template.first_turn(test.history[0], test.target[0], items, domain, 3, "k0")
    assert u == forward[0]


def test_diversity(embedded):
    utts = _utterances(embedded)
    stats = utterance_stats(utts)
    assert stats["distinct"] >= 0.98 * stats["samples"]
    first_sentences = {re.split(r"(?<=[.!?]) ", u.text)[0] for u in utts}
    assert len(first_sentences) > 60
    # Every phrase bank is large enough to vary.
    for bank in (
        phrases.OPENERS,
        phrases.NP_REQUESTS,
        phrases.BASE_REQUESTS,
        phrases.CLOSERS,
        phrases.HISTORY_CLAUSES,
        phrases.GENRE_CLAUSES,
        phrases.REJECTIONS,
    ):
        assert len(bank) >= 10


def _toy_items():
    make = items_lib.make_item
    return [
        items_lib.pad_item(),
        make(
            "1", "Matrix, The", year=1999, genres=["Action", "Sci-Fi"], tags=["matrix", "cyberpunk"]
        ),
        make("2", "Matrix Reloaded, The", year=2003, genres=["Action", "Sci-Fi"]),
        make("3", "Something Wild", year=1986, genres=["Comedy", "Crime", "Drama"]),
        make("4", "It", year=2017, genres=["Horror"]),
        make("5", "Toy Story", year=1995, genres=["Animation", "Children", "Comedy"]),
        make("6", "Unknown Thing", genres=["(no genres listed)"]),
        make("7", "Romance", year=1999, genres=["Drama", "Romance"]),
    ]


def test_leaky_parts_are_dropped_never_output():
    items = _toy_items()
    sim = TemplateSimulator(items, "movies", history_mention_prob=1.0)
    # History "Matrix Reloaded" names the target's distinctive word; the tag repeats the title.
    assert ("tag", "matrix") not in sim.conditions_of(1)
    for k in range(200):
        u = sim.first_turn([0, 2], 1, f"s{k}")
        assert u.history_item is None and find_leak(u.text, items[1]) is None
        u = sim.first_turn([5, 1], 3, f"s{k}")  # Many templates say "something".
        assert " something " not in _norm(u.text)
        u = sim.first_turn([5], 4, f"s{k}")  # "it" never appears for "It".
        assert " it " not in _norm(u.text)
        u = sim.first_turn([5], 6, f"s{k}")  # No attributes: a plain request.
        assert u.conditions == [] and u.text
    # "Romance" the film may still be asked for as a romance.
    assert any(
        ("genre", "Romance") in sim.first_turn([5], 7, f"s{k}").conditions for k in range(50)
    )


def test_last_resort_fallbacks(monkeypatch):
    items = _toy_items()
    sim = TemplateSimulator(items, "movies", history_mention_prob=1.0)
    monkeypatch.setattr(template, "render_first_turn", lambda *a, **k: "I want The Matrix.")
    u = sim.first_turn([5], 1, "x")
    assert u.text == phrases.FALLBACKS[0] and u.conditions == [] and u.history_item is None
    monkeypatch.setattr(phrases, "FALLBACKS", ("The Matrix?",))
    with pytest.raises(RuntimeError, match="names target 1"):
        sim.first_turn([5], 1, "x")


def test_later_turns_reveal_then_exhaust_then_accept():
    items = _toy_items()
    sim = TemplateSimulator(items, "movies", seed=1)
    state, first = sim.start(np.array([0, 0, 5, 2]), 1, "dlg")
    assert state.history == [5, 2] and state.revealed == first.conditions
    pool = sim.conditions_of(1)
    revealed = list(first.conditions)
    for _ in range(len(pool) - len(first.conditions) + 2):
        before = state.to_dict()
        state, reply = sim.respond(state, [2, 3, 4, 5, 6])
        assert state.to_dict() != before and not reply.accepted and not state.done
        assert find_leak(reply.text, items[1], strict=True, allow=[v for _, v in pool]) is None
        if reply.conditions:
            (cond,) = reply.conditions
            assert cond in pool and cond not in revealed
            revealed.append(cond)
    known = set(revealed)
    if ("year", "1999") in known:  # The year implies the decade.
        known.add(("decade", "1990s"))
    assert set(pool) <= known
    assert reply.conditions == []  # Exhausted: repeats a condition, reveals nothing.
    assert any(w in reply.text for w in ("add", "all I can", "anything else", "everything"))
    state, reply = sim.respond(state, [3, 4, 1, 5, 6])
    assert reply.accepted and reply.done and state.accepted and state.done
    assert "third" in reply.text
    assert state.shown == [2, 3, 4, 5, 6, 1]
    assert [t["role"] for t in state.turns[-2:]] == ["system", "user"]
    with pytest.raises(ValueError, match="already finished"):
        sim.respond(state, [1])


def test_state_round_trips_through_json_and_is_not_mutated():
    items = _toy_items()
    sim = TemplateSimulator(items, "movies")
    state, _ = sim.start([5], 3, "rt")
    snapshot = json.dumps(state.to_dict())
    new, _ = sim.respond(state, [1, 2])
    assert json.dumps(state.to_dict()) == snapshot
    again = DialogueState.from_dict(json.loads(json.dumps(new.to_dict())))
    assert again == new
    # Replies are seeded by (seed, key, round): replaying gives the same dialogue.
    assert sim.respond(state, [1, 2])[0] == new


def test_many_dialogues_never_leak(embedded):
    items, test, domain = embedded
    sim = TemplateSimulator(items, domain)
    rng = np.random.default_rng(0)
    for i in range(0, len(test.target), 6):
        target = int(test.target[i])
        state, _ = sim.start(test.history[i], target, f"d{i}")
        for _ in range(5):
            recs = rng.choice(np.arange(1, len(items)), 5, replace=False).tolist()
            state, reply = sim.respond(state, [r for r in recs if r != target])
            allowed = [v for _, v in state.revealed]
            assert find_leak(reply.text, items[target], strict=True, allow=allowed) is None


def test_amazon_items_use_categories_features_and_description():
    cfg = videogames.get_config().data
    cfg.data_dir = str(shared_path("fixtures", "amazon2023"))
    cfg.min_rating = 0.0
    out = prepare.build(cfg)
    items, test = out["items"], out["splits"]["test"]
    utts = simulate_first_turns(
        test.history, test.target, _keys(len(test.target)), items, cfg.domain, None
    )
    fields = {f for u in utts for f, _ in u.conditions}
    assert {"category", "description"} <= fields
    for utt, target in zip(utts, test.target):
        assert find_leak(utt.text, items[int(target)]) is None
        assert ("category", "Video Games") not in utt.conditions
        assert ("category", "Games") not in utt.conditions
        assert len(utt.conditions) <= 3


def test_description_and_feature_conditions():
    item = items_lib.make_item(
        "x",
        "Star Quest 0",
        categories=["Video Games", "PlayStation 4", "Games", "Action"],
        description="A action game for PlayStation 4 with online co-op.",
        features=["Genre: Action", "Platform: PlayStation 4", "Up to 4 players", "x" * 200],
    )
    conds = attributes.item_conditions(item, "video games")
    assert conds == [
        ("category", "PlayStation 4"),
        ("category", "Action"),
        ("feature", "Up to 4 players"),  # Genre/Platform repeat a category; long ones dropped.
        ("description", "online co-op"),
    ]


def test_bad_inputs(embedded):
    items, test, domain = embedded
    section = base.get_simulator_config()
    with pytest.raises(ValueError, match="unknown simulator domain"):
        TemplateSimulator(items, "books")
    with pytest.raises(ValueError, match="expected history"):
        simulate_first_turns(test.history[0], test.target, ["a"], items, domain, section)
    with pytest.raises(ValueError, match="sample keys"):
        simulate_first_turns(test.history, test.target, ["a"], items, domain, section)
    with pytest.raises(ValueError, match="unique"):
        simulate_first_turns(test.history[:2], test.target[:2], ["a", "a"], items, domain, section)
    with pytest.raises(ValueError, match="unknown simulator config field"):
        simulate_first_turns(test.history[:1], test.target[:1], ["a"], items, domain, {"kindd": 1})
    with pytest.raises(ValueError, match="kind must be one of"):
        simulate_first_turns(test.history[:1], test.target[:1], ["a"], items, domain, {"kind": "x"})
    with pytest.raises(ValueError, match="out of range"):
        TemplateSimulator(items, domain).first_turn([0], len(items), "k")
