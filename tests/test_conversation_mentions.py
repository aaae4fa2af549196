"""Titles inside a sentence (`conversation.mentions`) and the chat taking them as liked."""

import dialogue_helpers as H
import numpy as np
import pytest

from latentcrs_jax.conversation import chat
from latentcrs_jax.conversation.mentions import find_titles
from latentcrs_jax.conversation.titles import TitleIndex
from latentcrs_jax.evaluation.recommenders import Recommender

ID = H.item_id


@pytest.fixture(scope="module")
def index():
    return TitleIndex(H.catalogue())


def found(text, index):
    return [(f.text, f.match.item, f.negated) for f in find_titles(text, index)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I loved Alien and Fargo", [("Alien", ID("Alien"), False), ("Fargo", ID("Fargo"), False)]),
        ("something like The Matrix but funnier", [("The Matrix", ID("Matrix, The"), False)]),
        (
            "my favourites are the dark knight and pulp fiction",
            [
                ("the dark knight", ID("Dark Knight, The"), False),
                ("pulp fiction", ID("Pulp Fiction"), False),
            ],
        ),
        (
            "I saw Heat (1995), not Titanic",
            [
                ("Heat (1995)", ID("Heat"), False),
                ("Titanic", ID("Titanic"), True),
            ],
        ),
        (
            'I hated Titanic but loved "Up"',
            [
                ("Titanic", ID("Titanic"), True),
                ("Up", ID("Up"), False),
            ],
        ),
        (
            "Star Wars: Episode IV - A New Hope and Léon: The Professional",
            [
                (
                    "Star Wars: Episode IV - A New Hope",
                    ID("Star Wars: Episode IV - A New Hope"),
                    False,
                ),
                ("Léon: The Professional", ID(H.MOVIES[5][1]), False),
            ],
        ),
        # Ordinary words are not titles: lower case one-word names, a sentence-initial capital.
        ("I want something up beat, with speed and heat", []),
        ("Speed matters to me", []),
        ("", []),
    ],
)
def test_find_titles(index, text, expected):
    assert found(text, index) == expected


def test_a_name_of_two_items_is_ambiguous_without_a_year(index):
    (hit,) = find_titles("I loved Heat", index)
    assert hit.match.status == "ambiguous" and hit.match.item is None
    assert set(hit.match.suggestions) == {ID("Heat"), len(H.MOVIES)}


def _session():
    items = H.catalogue()
    base = np.linspace(1.0, 0.0, len(items)).astype(np.float32)
    seen = []

    def score(histories, texts):
        seen.append(histories.copy())
        return np.tile(base, (len(texts), 1))

    systems = {"latentcrs": Recommender("latentcrs", score)}
    return chat.ChatSession(systems, items, "movies", history_len=4), seen


def test_chat_takes_titles_in_a_request_as_liked():
    session, seen = _session()
    answer = session.handle("I loved Alien and Fargo, something like them but funnier, not Titanic")
    assert "Taking Alien (1979) as a title you like." in answer
    assert "Taking Fargo (1996) as a title you like." in answer
    assert "Titanic" not in answer.split("We infer")[0]
    assert session.state.history == [ID("Alien"), ID("Fargo")]
    np.testing.assert_array_equal(seen[-1][0], [0, 0, ID("Alien"), ID("Fargo")])
    assert ("genre", "comedy") in session.state.included  # "funnier"
    assert ("genre", "horror") not in session.state.included  # Alien's words are blanked
    shown = session.state.turns[-1]["items"]
    assert ID("Alien") not in shown and ID("Fargo") not in shown
    answer = session.handle("what about something like Heat")
    assert "matches several titles: Heat (1995); Heat (1986)" in answer
    assert session.state.history == [ID("Alien"), ID("Fargo")]
