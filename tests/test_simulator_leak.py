"""Tests of the simulator's leak check (latentcrs_jax/simulator/leak.py)."""

import csv
import io
import re

import pytest
from conftest import shared_path

from configs import base
from latentcrs_jax.data.readers.paths import resolve_data_dir
from latentcrs_jax.simulator.leak import distinctive_words, find_leak, fix_article, title_variants


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Matrix, The", "The Matrix"),
        ("Usual Suspects, The", "The Usual Suspects"),
        ("Bug's Life, A", "A Bug's Life"),
        ("Haine, La", "La Haine"),
        ("Crow, The: City of Angels", "The Crow: City of Angels"),
        ("Good, the Bad and the Ugly, The", "The Good, the Bad and the Ugly"),
        ("Cry, the Beloved Country", "Cry, the Beloved Country"),  # Lower-case "the": kept.
        ("Sex, Lies, and Videotape", "Sex, Lies, and Videotape"),
    ],
)
def test_fix_article(title, expected):
    assert fix_article(title) == expected


def test_title_variants_split_alternatives_and_drop_year_and_aka():
    assert title_variants("City of Lost Children, The (Cité des enfants perdus, La)") == [
        "The City of Lost Children",
        "La Cité des enfants perdus",
    ]
    assert title_variants("Seven (a.k.a. Se7en) (1995)") == ["Seven", "Se7en"]
    assert title_variants("[REC]²") == ["²", "REC"]
    # A parenthesis inside a word is not an alternative title.
    assert title_variants("Frontière(s)") == ["Frontière(s)"]


@pytest.mark.parametrize(
    "title, words",
    [
        ("Matrix, The", {"matrix"}),
        ("Toy Story 2", {"toy", "story"}),  # Numbers are not distinctive next to words.
        ("Rocky II", {"rocky"}),  # Nor roman numerals.
        ("Horror Express", {"express"}),  # Genre words are not distinctive.
        ("Scary Movie", {"scary"}),
        ("Seven (a.k.a. Se7en)", {"seven", "se7en"}),
        ("Schindler's List", {"schindlers", "list"}),
        ("Spider-Man", {"spider", "man", "spiderman"}),
        ("Heat", {"heat"}),  # A common English word, but not a stop word: distinctive.
        ("1941", {"1941"}),  # Only numbers: the number is the name.
        ("Nine to Five (a.k.a. 9 to 5)", {"nine", "five", "9", "5"}),
        ("Up", set()),
        ("It", set()),
        ("Game, The", set()),
    ],
)
def test_distinctive_words(title, words):
    assert distinctive_words(title) == words


@pytest.mark.parametrize(
    "text, title, fragment",
    [
        ("I loved the matrix!", "Matrix, The", "matrix"),
        ("Something like THE MATRIX please", "Matrix, The", "MATRIX"),
        ("What about The Usual Suspects?", "Usual Suspects, The", "Usual"),
        (
            "La cité des enfants perdus is great",
            "City of Lost Children, The (Cité des enfants perdus, La)",
            "cité",
        ),
        ("Have you seen Se7en?", "Seven (a.k.a. Se7en)", "Se7en"),
        ("a film with a monkey in it", "Twelve Monkeys (a.k.a. 12 Monkeys)", "monkey"),
        ("I adored amelie", "Amélie (Fabuleux destin d'Amélie Poulain, Le)", "amelie"),
        ("Schindler was a hero", "Schindler's List", "Schindler"),
        ("a Spiderman kind of film", "Spider-Man", "Spiderman"),
        ("I liked MASH a lot", "M*A*S*H", "MASH"),
        ("I can't stand the heat", "Heat", "heat"),
        ("from 1941 ideally", "1941", "1941"),
        ("Something like Up", "Up", "Up"),
        ("How about It tonight?", "It", "It"),
        ("Maybe The Game?", "Game, The", "The Game"),
    ],
)
def test_find_leak_returns_the_fragment(text, title, fragment):
    assert find_leak(text, {"title": title}) == fragment


@pytest.mark.parametrize(
    "text, title",
    [
        ("I'd like a sci-fi movie from the 1990s", "Matrix, The"),
        ("The genre should be action.", "Matrix, The"),
        ("I'm up for anything.", "Up"),  # Lower case: an ordinary word.
        ("Up for a thriller tonight?", "Up"),  # Sentence start: not a name.
        ("I want it now. It should be scary.", "It"),
        ("the game should be fun", "Game, The"),
        ("A war movie, please.", "War, The"),
        ("Released in 1979, a war film.", "1941"),
        ("A toy shop", "Toy Story 2"),  # "toy" is distinctive ...
    ],
)
def test_find_leak_clean_texts(text, title):
    if title == "Toy Story 2":  # ... so it does leak: the rule is strict on purpose.
        assert find_leak(text, title) == "toy"
    else:
        assert find_leak(text, title) is None


def test_strict_mode_counts_any_occurrence_of_common_word_titles_except_allowed():
    assert find_leak("I want it now", "It") is None
    assert find_leak("I want it now", "It", strict=True) == "it"
    assert find_leak("Up for a thriller?", "Up", strict=True) == "Up"
    # The film "Romance" may still be asked for as a romance when that is a stated condition.
    assert find_leak("a drama and romance", "Romance", strict=True) == "romance"
    assert find_leak("a drama and romance", "Romance", strict=True, allow=["Romance"]) is None
    # Distinctive words are never allowed.
    assert find_leak("the matrix", "Matrix, The", strict=True, allow=["matrix"]) == "matrix"


def test_edge_inputs():
    assert find_leak("", "Matrix, The") is None
    assert find_leak("anything", {"title": ""}) is None
    assert find_leak("anything", {"title": None}) is None
    with pytest.raises(TypeError, match="title"):
        find_leak("text", 5)


def _ml1m_titles() -> list[str]:
    path = shared_path("data", "ml-1m", "movies.dat")
    titles = []
    for line in path.read_text(encoding="latin-1").splitlines():
        titles.append(re.sub(r"\s*\(\d{4}\)\s*$", "", line.split("::")[1]))
    return titles


def _bundled_titles() -> list[str]:
    root = resolve_data_dir(base.get_base_config().data)
    text = (root / "movies.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(io.StringIO(text))
    return [re.sub(r"\s*\(\d{4}\)\s*$", "", r["title"].strip()) for r in rows]


@pytest.mark.parametrize("source", ["bundled", "ml-1m"])
def test_every_title_leaks_when_named_mid_sentence(source):
    titles = _bundled_titles() if source == "bundled" else _ml1m_titles()
    assert len(titles) > 3000
    for title in titles:
        for variant in title_variants(title):
            text = f"I want to see {variant} tonight."
            assert find_leak(text, title) is not None, (title, variant)
        # And the raw MovieLens form too.
        assert find_leak(f"I want to see {title} tonight.", title) is not None, title
