"""Tests of stated-feature matching: vocabulary, plurals, aliases, decades, negation, titles."""

import pytest

from latentcrs_jax.conversation import features
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.data.items import make_item
from latentcrs_jax.simulator.template import TemplateSimulator


def _items():
    pad = make_item("", "")
    return [
        pad,
        make_item("1", "Alien", year=1979, genres=["Horror", "Sci-Fi"], tags=["space", "aliens"]),
        make_item("2", "Heat", year=1995, genres=["Action", "Crime", "Thriller"], tags=["heist"]),
        make_item("3", "Toy Story", year=1995, genres=["Animation", "Children", "Comedy"]),
        make_item("4", "Notting Hill", year=1999, genres=["Comedy", "Romance"]),
        make_item("5", "Star Wars", year=1977, genres=["Action", "Sci-Fi"], tags=["space opera"]),
        make_item("6", "Unforgiven", year=1992, genres=["Western", "Drama"], tags=["funny"]),
        make_item("7", "Se7en", year=1995, genres=["Mystery", "Thriller"], tags=["twist ending"]),
        make_item("8", "Casablanca", year=1942, genres=["Drama", "Romance", "War"]),
        make_item("9", "Rock Album", categories=["CDs & Vinyl", "Rock", "Classic Rock"]),
        make_item("10", "Movie Tags", year=2001, genres=["Drama"], tags=["movies", "good"]),
    ]


@pytest.fixture(scope="module")
def vocab():
    return FeatureVocab(_items(), "movies")


def labels(vocab, feats):
    return sorted(vocab.label(f) for f in feats)


def test_tokens_fold_plurals_case_apostrophes_and_hyphens():
    assert features.tokens("COMEDIES, Thrillers & children's Sci-Fi") == [
        "comedy",
        "|",
        "thriller",
        "and",
        "children",
        "sci",
        "fi",
    ]
    assert features.normalise("Movies") == features.normalise("movie")
    assert features.tokens("the nineties") == ["the", "1990s"]


def test_item_features_cover_genres_decades_years_tags_categories(vocab):
    assert vocab.features_of(1) == {
        ("genre", "horror"),
        ("genre", "sci fi"),
        ("decade", "1970s"),
        ("year", "1979"),
        ("tag", "space"),
        ("tag", "alien"),
    }
    # The top-level Amazon category is dropped; a tag spelled like a genre alias is the genre.
    assert ("category", "rock") in vocab.features_of(9)
    assert not any("vinyl" in k for _, k in vocab.features_of(9))
    assert ("genre", "comedy") in vocab.features_of(6)  # tag "funny" -> Comedy.
    assert vocab.features_of(0) == frozenset() and vocab.features_of(999) == frozenset()
    # Tags made only of generic words are not features.
    assert vocab.features_of(10) == {("genre", "drama"), ("decade", "2000s"), ("year", "2001")}
    assert vocab.label(("genre", "sci fi")) == "Sci-Fi"


@pytest.mark.parametrize(
    "text, included",
    [
        ("I'd like a COMEDY", ["Comedy"]),
        ("any good comedies or thrillers?", ["Comedy", "Thriller"]),
        ("something animated for the kids", ["Animation", "Children"]),
        ("a children's movie", ["Children"]),
        ("science fiction please", ["Sci-Fi"]),
        ("a rom-com", ["Comedy", "Romance"]),  # One alias, two genres.
        ("a scary one", ["Horror"]),
        ("a film-noir or film noir", []),  # Not in this vocabulary: ignored.
        ("from the 90s", ["1990s"]),
        ("from the '90s", ["1990s"]),
        ("from the 1990s", ["1990s"]),
        ("from the nineties", ["1990s"]),
        ("from 1995", ["1995"]),
        ("from 1996", []),  # No item from 1996.
        ("under ninety minutes", []),
        ("with a twist ending", ["twist ending"]),
        ("with an alien", ["aliens"]),  # Label: the data's spelling.
        ("classic rock please", ["Classic Rock"]),  # Longest match; not also "Rock".
        ("some rock", ["Rock"]),
        ("日本の映画が見たい", []),
        ("", []),
    ],
)
def test_included_features(vocab, text, included):
    stated = vocab.stated(text)
    assert labels(vocab, stated.included) == sorted(included)
    assert stated.excluded == []


@pytest.mark.parametrize(
    "text, included, excluded",
    [
        ("no horror", [], ["Horror"]),
        ("not a comedy", [], ["Comedy"]),
        ("nothing scary", [], ["Horror"]),
        ("No comedies or romance, but sci-fi", ["Sci-Fi"], ["Comedy", "Romance"]),
        ("a thriller, not a comedy", ["Thriller"], ["Comedy"]),
        ("I don't want anything too scary", [], ["Horror"]),
        ("anything but westerns", [], ["Western"]),
        ("a comedy instead of a thriller", ["Comedy"], ["Thriller"]),
        ("I don't mind horror", ["Horror"], []),
        ("I'm not sure. Maybe a comedy", ["Comedy"], []),
        ("nothing but comedy", ["Comedy"], []),
        ("No luck with these. Also, it should be a thriller.", ["Thriller"], []),
        ("not from the 90s", [], ["1990s"]),
        ("no horror and a comedy", ["Comedy"], ["Horror"]),
        ("horror. no, not horror", [], ["Horror"]),  # A later mention overrides.
        ("no horror. actually horror is fine", ["Horror"], []),
    ],
)
def test_negation(vocab, text, included, excluded):
    stated = vocab.stated(text)
    assert labels(vocab, stated.included) == sorted(included)
    assert labels(vocab, stated.excluded) == sorted(excluded)


def test_match_reports_positions_and_flags(vocab):
    matches = vocab.match("no horror, a comedy")
    assert [(m.feature, m.negated) for m in matches] == [
        (("genre", "horror"), True),
        (("genre", "comedy"), False),
    ]
    toks = features.tokens("no horror, a comedy")
    assert toks[matches[1].start : matches[1].end] == ["comedy"]


def test_liked_titles_are_blanked(vocab):
    assert labels(vocab, vocab.stated("I loved Star Wars", ["Star Wars"]).included) == []
    text = "Casablanca was great, more war films please"
    assert labels(vocab, vocab.stated(text, ["Casablanca"]).included) == ["War"]
    # "Star Wars" would state the genre War without blanking.
    assert labels(vocab, vocab.stated("like Star Wars").included) == ["War"]
    assert vocab.stated("like Star Wars", ["Star Wars"]).included == []


def test_feature_of_maps_simulator_conditions(vocab):
    assert vocab.feature_of("genre", "Sci-Fi") == ("genre", "sci fi")
    assert vocab.feature_of("tag", "funny") == ("genre", "comedy")
    assert vocab.feature_of("decade", "1990s") == ("decade", "1990s")
    assert vocab.feature_of("tag", "nonexistent tag") is None


def test_template_utterances_state_the_revealed_conditions():
    """Every genre/decade/year/tag the template simulator reveals is matched, none excluded."""
    items = _items()
    vocab = FeatureVocab(items, "movies")
    sim = TemplateSimulator(items, "movies", seed=3)
    checked = 0
    for target in range(1, 9):
        for k in range(6):
            history = [0, 0] + [i for i in range(1, 9) if i != target][k : k + 3]
            state, utt = sim.start(history, target, f"s{target}_{k}")
            texts, conds = [utt.text], list(utt.conditions)
            for _ in range(4):
                state, utt = sim.respond(state, [9])
                texts.append(utt.text)
                conds += utt.conditions
            titles = [items[i]["title"] for i in state.history]
            stated = vocab.stated(" ".join(texts), titles)
            assert stated.excluded == [], texts
            for field, value in conds:
                feature = vocab.feature_of(field, value)
                if field in ("genre", "decade", "year", "tag") and feature is not None:
                    assert feature in stated.included, (field, value, texts)
                    checked += 1
    assert checked > 100
