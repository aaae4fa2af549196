"""Tests of the recommendation turn: full ranking, the hard filter order, the system utterance."""

import numpy as np
import pytest

from latentcrs_jax.conversation import filter as filter_lib

G = lambda name: ("genre", name)  # noqa: E731

# Item id -> features: 1..8 real items, 9 has no title.
FEATURES = {
    1: {G("drama")},
    2: {G("comedy"), G("romance")},
    3: {G("comedy")},
    4: {G("horror"), G("comedy")},
    5: {G("comedy"), G("romance"), ("decade", "1990s")},
    6: set(),
    7: {G("romance")},
    8: {G("comedy"), G("romance")},
    9: {G("comedy"), G("romance")},
}


def feats(i):
    return FEATURES.get(i, set())


def has_title(i):
    return i != 9


def test_rank_items_masks_pad_history_and_breaks_ties_by_lower_id():
    scores = np.array(
        [
            [9.0, 1.0, 3.0, 3.0, 2.0, -np.inf, np.nan],
            [9.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ],
        np.float32,
    )
    history = np.array([[0, 0], [0, 1]], np.int32)
    ranked = filter_lib.rank_items(scores, history, k=10)
    assert ranked[0] == [2, 3, 4, 1]  # PAD never; -inf and NaN dropped; tie 2/3 -> 2 first.
    assert ranked[1] == [2, 3, 4, 5, 6]  # History item 1 masked.
    unmasked = filter_lib.rank_items(scores, history, k=2, mask_history=False)
    assert unmasked[1] == [1, 2]


def test_rank_items_ties_at_the_cut_keep_lower_ids():
    scores = np.zeros((1, 8), np.float32)
    scores[0, 5] = 1.0
    assert filter_lib.rank_items(scores, k=3) == [[5, 1, 2]]
    with pytest.raises(ValueError, match=r"\[B, N\+1\]"):
        filter_lib.rank_items(np.zeros(5))


def test_hard_filter_orders_by_matches_stably():
    ranked = [1, 2, 3, 4, 5, 6, 7, 8]
    inc = [G("comedy"), G("romance")]
    out = filter_lib.hard_filter(ranked, feats, inc, top_k=8, candidates=8)
    # 2 matches: 2, 5, 8 (rank order); 1 match: 3, 4, 7; 0: 1, 6.
    assert out == [2, 5, 8, 3, 4, 7, 1, 6]


def test_hard_filter_removes_excluded_and_untitled_items():
    ranked = [9, 4, 1, 2, 3, 5]
    out = filter_lib.hard_filter(
        ranked, feats, [G("comedy")], [G("horror")], top_k=5, candidates=6, has_title=has_title
    )
    assert 4 not in out and 9 not in out
    assert out == [2, 3, 5, 1]


def test_hard_filter_pushes_shown_items_to_the_end():
    ranked = [1, 2, 3, 4, 5, 6, 7, 8]
    inc = [G("comedy"), G("romance")]
    out = filter_lib.hard_filter(ranked, feats, inc, shown=[2, 5], top_k=8, candidates=8)
    assert out == [8, 3, 4, 7, 1, 6, 2, 5]
    # The authors' order: the number of matches outranks the push-back.
    faithful = filter_lib.hard_filter(
        ranked, feats, inc, shown=[2, 5], top_k=8, candidates=8, shown_last=False
    )
    assert faithful == [8, 2, 5, 3, 4, 7, 1, 6]


def test_hard_filter_takes_top_k_of_top_candidates_and_refills():
    ranked = [1, 2, 3, 4, 5, 6, 7, 8]
    # Only the first 4 are re-ordered; item 5 (2 matches) lies beyond the candidates.
    out = filter_lib.hard_filter(ranked, feats, [G("romance")], top_k=3, candidates=4)
    assert out == [2, 1, 3]
    # Removing comedies leaves 1 of the 4 candidates: the rest of the ranking refills, in rank
    # order with shown items last.
    out = filter_lib.hard_filter(ranked, feats, [], [G("comedy")], shown=[6], top_k=3, candidates=4)
    assert out == [1, 7, 6]
    assert filter_lib.hard_filter([], feats, top_k=5) == []


def test_hard_filter_without_features_keeps_rank_order():
    ranked = [5, 3, 1, 2]
    assert filter_lib.hard_filter(ranked, feats, top_k=3, candidates=50) == [5, 3, 1]


def test_system_utterance():
    text = filter_lib.system_utterance(["A (1990)", "B"], ["Comedy", "1990s"], ["Horror"])
    assert text == (
        "We infer you like: Comedy, 1990s (not: Horror). The recommended items are: 1 A (1990) 2 B"
    )
    assert filter_lib.system_utterance(["A"]) == "The recommended items are: 1 A"
    assert filter_lib.system_utterance(["A"], [], ["Horror"]).startswith(
        "We infer you like: anything (not: Horror). "
    )


def test_item_title_fixes_article_and_adds_year():
    assert filter_lib.item_title({"title": "Matrix, The", "year": 1999}) == "The Matrix (1999)"
    assert filter_lib.item_title({"title": "Some Album", "year": None}) == "Some Album"
    assert filter_lib.item_title({"title": "", "raw_id": "B00X"}) == "B00X"
