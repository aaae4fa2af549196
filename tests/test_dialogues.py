"""Human dialogues: readers, title resolution, the protocol's contexts and the metrics.

The fixtures (tests/data) are hand-written in ReDial's schema and in the generic format; the
catalogue is `dialogue_helpers.MOVIES` (MovieLens title forms), so nothing here needs a workdir.
"""

import dataclasses
import json
import math

import dialogue_helpers as H
import numpy as np
import pytest

from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.dialogues import evaluate, metrics, protocol, readers
from latentcrs_jax.dialogues.resolve import Resolver
from latentcrs_jax.evaluation.recommenders import Recommender

ID = H.item_id


@pytest.fixture(scope="module")
def items():
    return H.catalogue()


@pytest.fixture(scope="module")
def vocab(items):
    return FeatureVocab(items, "movies")


@pytest.fixture(scope="module")
def redial():
    return list(readers.read(H.REDIAL, "redial", H.REDIAL_MOVIES))


@pytest.fixture(scope="module")
def built(items, vocab, redial):
    resolver = Resolver(items)
    contexts, stats = protocol.build_contexts(redial, resolver, vocab, history_len=24)
    return contexts, stats, resolver


def by_key(contexts):
    return {(c.dialogue, c.turn): c for c in contexts}


# ------------------------------------------------------------------------------------ readers
def test_redial_reader_roles_titles_and_questionnaires(redial):
    assert len(redial) == 22
    f01 = redial[0]
    assert f01.id == "f01" and f01.source.endswith("redial_fixture.jsonl:1")
    assert [t.role for t in f01.turns] == ["recommender", "seeker"] * 3
    assert f01.turns[1].text == "I love sci-fi, The Matrix (1999) is my favorite"
    assert f01.turns[1].mentions == (readers.Mention("111", "The Matrix (1999)"),)
    assert f01.labels["113"] == readers.Labels(suggested=1, seen=0, liked=1)
    assert redial[1].labels == {}  # initiatorQuestions: [] (a list)
    f08 = redial[7]
    assert f08.turns[0].mentions[0].title == "Alien (1979)"  # double space collapsed
    f09 = redial[8]
    refs = {m.ref: m.title for m in f09.turns[1].mentions}
    # "" stays untitled (the CSV has none either); null takes the movies CSV's title.
    assert refs == {"192": "", "193": "Pulp Fiction (1994)"}
    assert f09.turns[1].text == "did you see or Pulp Fiction (1994) ?"
    assert "😀" in redial[2].turns[0].text and "Amélie (2001)" in redial[2].turns[0].text


def test_generic_reader(items):
    dialogues = list(readers.read(H.GENERIC, "generic"))
    assert [d.id for d in dialogues] == ["g1", f"{H.GENERIC}:3"]  # blank line 2 skipped
    g1 = dialogues[0]
    assert [t.role for t in g1.turns] == ["seeker", "recommender", "seeker", "recommender"]
    assert g1.turns[0].mentions[1] == readers.Mention("6", "", "6")
    assert g1.labels["Terminator, The (1984)"] == readers.Labels(1, None, 1)
    assert g1.labels["541"] == readers.Labels(1, None, 2)
    contexts, stats = protocol.build_contexts(dialogues, Resolver(items), history_len=5)
    assert [(c.dialogue, c.targets, c.strict, c.history) for c in contexts] == [
        ("g1", (ID("Terminator, The"),), (True,), (ID("Alien"), ID("Heat"))),
        ("g1", (ID("Blade Runner"),), (False,), (ID("Alien"), ID("Heat"))),
        (f"{H.GENERIC}:3", (ID("Toy Story 3"),), (False,), ()),
    ]
    assert (stats.targets_repeated, stats.targets_unresolved) == (1, 1)  # Heat; the 2031 film


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not a redial conversation"),
        ('{"messages": []}', "missing 'initiatorWorkerId'"),
        (
            '{"initiatorWorkerId": 1, "respondentWorkerId": 2, "messages": [{"senderWorkerId": 3,'
            ' "text": "hi"}]}',
            "sender 3 is neither worker",
        ),
        (
            '{"initiatorWorkerId": 1, "respondentWorkerId": 2, "messages": [], '
            '"initiatorQuestions": {"5": {"liked": 7}}}',
            "liked must be 0, 1 or 2",
        ),
        ("[1, 2]", "must be a JSON object"),
        ('{"conversationId": 1, "conversationId": 2}', "duplicate key 'conversationId'"),
    ],
)
def test_a_bad_line_stops_with_file_and_line(tmp_path, line, message):
    good = H.REDIAL.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(good[:2] + [line] + good[2:4]) + "\n", encoding="utf-8")
    with pytest.raises(readers.DialogueFormatError, match=rf"d\.jsonl:3: .*{message}"):
        list(readers.read(path, "redial"))
    stats = readers.ReadStats()
    kept = list(readers.read(path, "redial", skip_bad_lines=True, stats=stats))
    assert [d.id for d in kept] == ["f01", "f02", "f03", "f04"]
    assert (stats.dialogues, stats.bad_lines) == (4, 1) and ":3:" in stats.errors[0]


def test_missing_file_format_and_movies_errors(tmp_path):
    with pytest.raises(readers.DialogueFormatError, match="no such dialogue file"):
        list(readers.read(tmp_path / "absent.jsonl"))
    with pytest.raises(readers.DialogueFormatError, match="unknown dialogue format"):
        list(readers.read(H.REDIAL, "csv"))
    bad = tmp_path / "m.csv"
    bad.write_text("id,name\n1,x\n")
    with pytest.raises(readers.DialogueFormatError, match=r"m.csv:1: header lacks .*'movieName'"):
        list(readers.read(H.REDIAL, "redial", movies=bad))
    generic = tmp_path / "g.jsonl"
    generic.write_text(json.dumps({"turns": [{"role": "critic", "text": "x"}]}) + "\n")
    with pytest.raises(readers.DialogueFormatError, match=r"g\.jsonl:1: .*role 'critic'"):
        list(readers.read(generic, "generic"))


# ---------------------------------------------------------------------------------- resolution
def test_resolution_and_coverage(built):
    _, _, resolver = built
    look = lambda title: resolver.lookup(readers.Mention("x", title))  # noqa: E731
    assert look("Matrix, The (1999)") == (ID("Matrix, The"), "exact")
    assert look("The Matrix (1999)") == (ID("Matrix, The"), "exact")
    assert look("Léon: The Professional (1994)")[0] == ID(H.MOVIES[5][1])
    assert look("WALL-E (2008)")[0] == ID("WALL·E")
    assert look("Spirited Away  (2001)")[0] == ID(H.MOVIES[49][1])
    assert look("Star Wars (1977)") == (ID("Star Wars: Episode IV - A New Hope"), "fuzzy")
    assert look("Terminator 2 (1991)") == (ID("Terminator 2: Judgment Day"), "fuzzy")
    assert look("Heat (1986)")[0] == len(H.MOVIES)  # the year picks the second Heat
    assert look("Heat") == (None, "ambiguous")
    assert look("Sharknado 3 (2015)") == (None, "unknown")
    cov = resolver.coverage
    # 74 mention occurrences; unresolved: Sharknado 3 twice, an empty title, La La Land and
    # My Dinner with Andre; fuzzy: the three Star Wars titles and Terminator 2.
    assert (cov.mentions, cov.resolved, cov.fuzzy) == (74, 69, 4)
    assert cov.top_unresolved(2) == [("Sharknado 3 (2015)", 2), ("<no title>", 1)]


# ------------------------------------------------------------------------------------ protocol
def test_protocol_counts(built):
    _, stats, _ = built
    assert stats.to_dict() == {
        "dialogues": 22,
        "dialogues_without_context": 1,  # f05: no movie at all
        "messages": 84,
        "recommendation_messages": 40,
        "target_mentions": 51,
        "targets_unresolved": 3,
        "targets_repeated": 4,  # f06 Toy Story, f07 Shawshank, f22 Fargo and Lebowski
        "targets": 44,
        "strict_targets": 32,
        "contexts": 39,
    }


def test_contexts_hand_checked(built, redial):
    contexts, _, _ = built
    c = by_key(contexts)
    f01 = c["f01", 2]
    assert f01.text == (
        "Hi! What kind of movies do you like? I love sci-fi, The Matrix (1999) is my favorite"
    )
    assert (f01.targets, f01.strict, f01.history) == ((ID("Blade Runner"),), (True,), (1,))
    assert f01.included == (("genre", "sci fi"),)  # "(1999)" of the mention is no stated year
    assert c["f02", 1].targets == (ID("Matrix, The"), ID("Terminator, The"))
    assert c["f02", 3].history == (ID("Terminator, The"),)
    assert c["f10", 0].text == "" and c["f10", 0].history == ()  # the recommender opens
    assert c["f06", 3].targets == (ID("Toy Story 3"),)  # Toy Story again is not a target
    assert ("f22", 3) not in c  # both movies were mentioned before: no context
    assert c["f08", 3].excluded == (("genre", "action"),)  # "no action, just horror"
    assert c["f11", 4].included[-1] == ("genre", "comedy")  # "something funnier"
    assert c["f14", 1].history == (ID("Shrek"), ID("Ice Age"))
    assert c["f14", 1].strict == (False,)  # only the respondent answered for it


def test_no_target_leaks_into_its_context(built, redial):
    contexts, _, resolver = built
    dialogues = {d.id: d for d in redial}
    for c in contexts:
        d = dialogues[c.dialogue]
        earlier = d.turns[: c.turn]
        assert c.text == " ".join(t.text for t in earlier if t.text)  # all fit in 1000 chars
        before = {resolver.lookup(m)[0] for t in earlier for m in t.mentions}
        assert not set(c.targets) & before and not set(c.targets) & set(c.history)
        seeker = [resolver.lookup(m)[0] for t in earlier if t.role == "seeker" for m in t.mentions]
        assert set(c.history) == {i for i in seeker if i is not None}


def test_join_newest_keeps_the_end():
    assert protocol.join_newest(["aaa", "", "bb", "cccc"], None) == "aaa bb cccc"
    assert protocol.join_newest(["aaa", "bb", "cccc"], 8) == "bb cccc"
    assert protocol.join_newest(["aaa", "bb", "cccc"], 9) == "a bb cccc"
    assert protocol.join_newest(["aaa", "bb", "cccc"], 3) == "ccc"
    assert len(protocol.join_newest(["x" * 50] * 40, 1000)) == 1000


def test_history_matrix_is_left_padded():
    ctx = [
        protocol.Context("d", 0, "", (1, 2, 3), (4,), (False,)),
        protocol.Context("e", 0, "", (), (4,), (True,)),
    ]
    np.testing.assert_array_equal(protocol.history_matrix(ctx, 2), [[2, 3], [0, 0]])


# ------------------------------------------------------------------------------------- metrics
def test_target_ranks_tie_rule_and_masking():
    scores = np.array([[9.0, 1.0, 3.0, 3.0, 2.0, np.nan]])
    history = np.array([[0, 2]])
    # Unmasked: item 3 ties with item 2 (lower id first) -> rank 1; masked: item 2 is gone.
    assert metrics.target_ranks(scores, history, [[3, 4, 1]], False) == [[1, 2, 3]]
    assert metrics.target_ranks(scores, history, [[3, 4, 1, 2]], True) == [[0, 1, 2, metrics.MISS]]
    assert metrics.target_ranks(scores, None, [[5, 0]], False) == [[metrics.MISS, metrics.MISS]]


def test_summarise_against_hand_values():
    ranks = [0, 3, 9, 10, 49, 50, metrics.MISS]
    got = metrics.summarise(ranks)
    assert got["targets"] == 7
    assert got["recall@1"] == pytest.approx(1 / 7)
    assert got["recall@10"] == pytest.approx(3 / 7)
    assert got["recall@50"] == pytest.approx(5 / 7)
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(11)) / 7)
    assert math.isnan(metrics.summarise([])["recall@1"])
    assert metrics.list_ranks([5, 7, 5], [7, 5, 9]) == [1, 0, metrics.MISS]


def _oracle(contexts, n_items, history_first=False):
    """Scores each context's targets at the top (in order); optionally its history above them."""
    table = {c.text: c for c in contexts}

    def score(histories, texts):
        out = np.zeros((len(texts), n_items + 1), np.float32)
        for row, text in enumerate(texts):
            c = table.get(text)
            if c is None:
                continue
            for k, t in enumerate(c.targets):
                out[row, t] = 100.0 - k
            if history_first:
                for k, h in enumerate(c.history):
                    out[row, h] = 200.0 - k
        return out

    return Recommender("oracle", score)


def test_evaluate_with_an_oracle_matches_closed_forms(items):
    # Distinct texts per context: the fixture's contexts, numbered.
    contexts, _ = protocol.build_contexts(
        readers.read(H.REDIAL, "redial", H.REDIAL_MOVIES), Resolver(items), history_len=24
    )
    contexts = [dataclasses.replace(c, text=f"{n} {c.text}") for n, c in enumerate(contexts)]
    n = len(items) - 1
    systems = {"oracle": _oracle(contexts, n), "history_first": _oracle(contexts, n, True)}
    results, seconds = evaluate.evaluate(systems, contexts, history_len=24, batch_size=8)
    assert set(seconds) == {"oracle", "history_first"}
    # The j-th target of a context ranks j: R@1 = contexts / targets, NDCG@10 = mean 1/log2(j+2).
    js = [j for c in contexts for j in range(len(c.targets))]
    for view in ("masked", "unmasked"):
        got = results["oracle"][view]
        assert got["targets"] == 44
        assert got["recall@1"] == pytest.approx(39 / 44)
        assert got["recall@10"] == got["recall@50"] == 1.0
        assert got["ndcg@10"] == pytest.approx(np.mean([1 / math.log2(j + 2) for j in js]))
    strict = [j for c in contexts for j, s in zip(range(len(c.targets)), c.strict) if s]
    assert results["oracle"]["masked_strict"]["targets"] == 32
    assert results["oracle"]["masked_strict"]["recall@1"] == pytest.approx(strict.count(0) / 32)
    # History above the targets: masked, nothing changes; unmasked, each target drops by the
    # number of history items.
    assert results["history_first"]["masked"] == results["oracle"]["masked"]
    shifted = [j + len(c.history) for c in contexts for j in range(len(c.targets))]
    assert results["history_first"]["unmasked"]["recall@1"] == pytest.approx(
        np.mean([r < 1 for r in shifted])
    )


def test_latentcrs_f_reorders_by_the_stated_features(items, vocab):
    # One context: the seeker asked for Horror and ruled out Action. LatentCRS ranks
    # Matrix (Action|Sci-Fi|Thriller) first, then Alien (Horror|Sci-Fi), then Psycho.
    ctx = [
        protocol.Context(
            "d",
            1,
            "t",
            (),
            (ID("Alien"), ID("Psycho"), ID("Matrix, The")),
            (True, True, True),
            (("genre", "horror"),),
            (("genre", "action"),),
        )
    ]
    order = [ID("Matrix, The"), ID("Alien"), ID("Shawshank Redemption, The"), ID("Psycho")]

    def score(histories, texts):
        out = np.zeros((len(texts), len(items)), np.float32)
        for k, i in enumerate(order):
            out[:, i] = 10.0 - k
        return out

    systems = {"latentcrs": Recommender("latentcrs", score)}
    results, _ = evaluate.evaluate(systems, ctx, history_len=3, vocab=vocab, batch_size=2)
    assert list(results) == ["latentcrs_f", "latentcrs"]
    # Unfiltered: Alien 1, Psycho 3, Matrix 0. Filtered: Matrix removed (Action); the horror
    # films first in rank order (Alien 0, Psycho 1).
    assert results["latentcrs"]["masked"]["recall@1"] == pytest.approx(1 / 3)
    assert results["latentcrs_f"]["masked"]["recall@1"] == pytest.approx(1 / 3)
    assert results["latentcrs_f"]["masked"]["recall@10"] == pytest.approx(2 / 3)
    assert results["latentcrs"]["masked"]["recall@10"] == 1.0
    assert results["latentcrs_f"]["masked"]["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_latentcrs_v_reorders_the_filtered_top_by_the_validator(items, vocab):
    # ^F's list starts Alien, Psycho (horror first; Matrix removed); a similarity-only stand-in
    # (weight 0) whose item texts favour Psycho swaps the top 2; past them ^F's order stands.
    from latentcrs_jax.conversation.validator import StandInValidator

    ctx = [
        protocol.Context(
            "d",
            1,
            "t",
            (),
            (ID("Psycho"), ID("Silence of the Lambs, The")),
            (True, False),
            (("genre", "horror"),),
            (("genre", "action"),),
        )
    ]
    order = [ID("Matrix, The"), ID("Alien"), ID("Shawshank Redemption, The"), ID("Psycho")]

    def score(histories, texts):
        out = np.zeros((len(texts), len(items)), np.float32)
        for k, i in enumerate(order):
            out[:, i] = 10.0 - k
        return out

    item_text = np.tile(np.array([[0.0, 1.0]], np.float32), (len(items), 1))
    item_text[ID("Psycho")] = [1.0, 0.0]
    validator = StandInValidator(
        lambda texts: np.tile([[1.0, 0.0]], (len(texts), 1)), item_text, 0.0
    )
    systems = {"latentcrs": Recommender("latentcrs", score)}
    results, _ = evaluate.evaluate(
        systems, ctx, 3, vocab, batch_size=2, validator=validator, validator_candidates=2
    )
    assert list(results) == ["latentcrs_f", "latentcrs_v", "latentcrs"]
    # ^F: Alien 0, Psycho 1, then the other horror films by id: Silence of the Lambs 2.
    # ^V: Psycho 0, Alien 1, Silence of the Lambs 2.
    f, v = results["latentcrs_f"]["masked"], results["latentcrs_v"]["masked"]
    assert (f["recall@1"], v["recall@1"]) == (0.0, 0.5)
    assert f["ndcg@10"] == pytest.approx((1 / math.log2(3) + 0.5) / 2)
    assert v["ndcg@10"] == pytest.approx((1 + 0.5) / 2)
    assert results["latentcrs_v"]["masked_strict"]["recall@1"] == 1.0
