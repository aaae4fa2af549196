"""Tests of the chat's fuzzy title lookup."""

import pytest

from latentcrs_jax.conversation.titles import TitleIndex, split_titles, title_key
from latentcrs_jax.data.items import make_item

TITLES = [
    ("Alien", 1979),
    ("Aliens", 1986),
    ("Heat", 1995),
    ("Heat", 1986),
    ("Matrix, The", 1999),
    ("Shawshank Redemption, The", 1994),
    ("Star Wars: Episode IV - A New Hope", 1977),
    ("Star Wars: Episode V - The Empire Strikes Back", 1980),
    ("1984", 1984),
    ("Blade Runner 2049", 2017),
    ("Amélie (Fabuleux destin d'Amélie Poulain, Le)", 2001),
    ("Terminator, The", 1984),
    ("Terminator 2: Judgment Day", 1991),
]


@pytest.fixture(scope="module")
def index():
    items = [make_item("", "")] + [
        make_item(str(i), t, year=y) for i, (t, y) in enumerate(TITLES, 1)
    ]
    return TitleIndex(items)


def test_title_key():
    assert title_key("The Matrix") == title_key("matrix") == "matrix"
    assert title_key("  AMÉLIE!! ") == "amelie"
    assert title_key("Schindler's List") == "schindlers list"
    assert title_key("") == ""


@pytest.mark.parametrize(
    "query, item",
    [
        ("Alien", 1),
        ("aliens", 2),
        ("the matrix", 5),
        ("Matrix, The", 5),
        ("MATRIX (1999)", 5),
        ("Heat (1995)", 3),
        ("heat 1986", 4),
        ("1984", 9),
        ("Blade Runner 2049", 10),
        ("Amelie", 11),
        ("Le Fabuleux destin d'Amélie Poulain", 11),
    ],
)
def test_exact_lookup(index, query, item):
    m = index.lookup(query)
    assert (m.status, m.item) == ("exact", item)


def test_year_disambiguates_same_names(index):
    m = index.lookup("Heat")
    assert m.status == "ambiguous" and m.item is None and set(m.suggestions) == {3, 4}
    m = index.lookup("Heat (2020)")  # No Heat from 2020: offer the ones there are.
    assert m.status == "ambiguous" and set(m.suggestions) == {3, 4}


def test_fuzzy_lookup(index):
    m = index.lookup("Allien")
    assert (m.status, m.item) == ("fuzzy", 1)
    m = index.lookup("shawshank")  # The only name that contains it.
    assert (m.status, m.item) == ("fuzzy", 6)
    m = index.lookup("star wars")
    assert m.status == "ambiguous" and set(m.suggestions) == {7, 8}
    m = index.lookup("Matrx Reloaded")
    assert m.item is None and m.status == "unknown"


@pytest.mark.parametrize("query", ["", "   ", "qwxyzzy", "!!!", "x" * 5000, "映画"])
def test_unknown_queries_never_fail(index, query):
    m = index.lookup(query)
    assert m.item is None and m.status == "unknown"


def test_split_titles():
    assert split_titles("Alien; Heat (1995) | Toy Story\n") == ["Alien", "Heat (1995)", "Toy Story"]
    assert split_titles(" ; ") == []


def test_a_stated_year_is_not_overridden_by_a_closer_name(index):
    # "terminator 2" is closest to "terminator" (1984), but the year names the sequel.
    m = index.lookup("Terminator 2 (1991)")
    assert (m.status, m.item) == ("fuzzy", 13)
    assert index.lookup("The Terminator (1984)").item == 12
