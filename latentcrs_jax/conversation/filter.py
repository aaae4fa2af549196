"""The recommendation turn: full ranking, the hard filter (LatentCRS^F) and the system utterance.

`rank_items` turns raw scores over all item ids into ranked id lists (PAD, and the history by
default, never ranked; among equal scores the lower id first, as `evaluation/ranking.py`).
`hard_filter` is docs/method.md 5 step 4, on the top `candidates` of that ranking:
1. items without a title are dropped (the authors drop them when mapping to raw ids);
2. items with an excluded feature ("no horror") are removed;
3. the rest are stable-sorted by the number of stated features each item has, most first;
4. items already shown are pushed to the end (stable), so they come back only when nothing
   else is left (with `shown_last=False`, the authors' order: matches outrank the push-back);
5. the first `top_k` are shown. When removals leave fewer than `top_k`, the next items of the
   ranking (past `candidates`) fill the list in rank order, unshown first.
`system_utterance` names the inferred features and lists the items; `item_title` is how an
item is named to users.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from latentcrs_jax.conversation.features import Feature
from latentcrs_jax.simulator import attributes


def rank_items(
    scores: np.ndarray,
    history: np.ndarray | None = None,
    k: int = 50,
    mask_history: bool = True,
) -> list[list[int]]:
    """The top-k item ids of each row, best first.

    Args:
      scores: float[B, N+1] raw scores over item ids 0..N (column 0 is PAD).
      history: int[B, H] item ids to mask per row (0 = padding); used if `mask_history`.
      k: list length (shorter when fewer items have a finite score).
      mask_history: never rank the row's history items.

    Returns:
      B lists of item ids; ties go to the lower id; PAD and -inf/NaN scores never appear.
    """
    s = np.array(scores, dtype=np.float32, copy=True)
    if s.ndim != 2:
        raise ValueError(f"scores must be [B, N+1], got shape {s.shape}")
    s[~np.isfinite(s)] = -np.inf
    s[:, 0] = -np.inf
    if mask_history and history is not None:
        h = np.asarray(history)
        rows = np.repeat(np.arange(s.shape[0]), h.shape[1])
        s[rows, h.reshape(-1)] = -np.inf  # PAD entries hit column 0, already masked.
    k = max(0, min(int(k), s.shape[1] - 1))
    if k == 0:
        return [[] for _ in range(s.shape[0])]
    kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]  # The k-th largest score per row.
    out = []
    for row, thresh in zip(s, kth):
        ids = np.flatnonzero((row >= thresh) & np.isfinite(row))
        order = np.lexsort((ids, -row[ids]))  # Score descending, then id ascending.
        out.append([int(i) for i in ids[order][:k]])
    return out


def hard_filter(
    ranked: Sequence[int],
    item_features: Callable[[int], Collection[Feature]],
    included: Collection[Feature] = (),
    excluded: Collection[Feature] = (),
    shown: Collection[int] = (),
    *,
    top_k: int = 5,
    candidates: int = 50,
    has_title: Callable[[int], bool] | None = None,
    shown_last: bool = True,
) -> list[int]:
    """LatentCRS^F: re-orders the top of a ranking by the dialogue's stated features.

    Args:
      ranked: item ids, best first (at least `candidates` when available; more allow a refill).
      item_features: item id -> its features (`FeatureVocab.features_of`).
      included: stated features.
      excluded: ruled-out features; an item with any of them is removed.
      shown: item ids shown in earlier rounds.
      top_k: how many to return.
      candidates: how much of the ranking is re-ordered.
      has_title: item id -> whether it has a title (None keeps every item).
      shown_last: push shown items behind every unshown one (default); False: the authors'
        order, where the number of matched features outranks the push-back.

    Returns:
      Up to `top_k` item ids.
    """
    inc, exc, seen = set(included), set(excluded), set(shown)

    def keep(i: int) -> bool:
        return (has_title is None or has_title(i)) and not (exc & set(item_features(i)))

    pool = [i for i in dict.fromkeys(int(i) for i in ranked[:candidates]) if keep(i)]

    def key(pos: int) -> tuple[int, int, int]:
        i = pool[pos]
        matched = -len(inc & set(item_features(i)))
        was_shown = int(i in seen)
        return (was_shown, matched, pos) if shown_last else (matched, was_shown, pos)

    out = [pool[p] for p in sorted(range(len(pool)), key=key)][:top_k]
    if len(out) < top_k:
        taken = set(out)
        rest = [i for i in (int(i) for i in ranked[candidates:]) if i not in taken and keep(i)]
        rest = list(dict.fromkeys(rest))
        rest.sort(key=lambda i: int(i in seen))  # Stable: rank order, unshown first.
        out += rest[: top_k - len(out)]
    return out


def system_utterance(
    titles: Sequence[str], included: Sequence[str] = (), excluded: Sequence[str] = ()
) -> str:
    """ "We infer you like: a, b (not: c). The recommended items are: 1 <title> 2 <title> ...".

    Args:
      titles: the titles shown, in order.
      included: labels of the stated features (the prefix is omitted when there are none).
      excluded: labels of the ruled-out features.
    """
    prefix = ""
    if included or excluded:
        prefix = "We infer you like: " + (", ".join(included) if included else "anything")
        if excluded:
            prefix += f" (not: {', '.join(excluded)})"
        prefix += ". "
    listing = " ".join(f"{n} {t}" for n, t in enumerate(titles, 1))
    return f"{prefix}The recommended items are: {listing}"


def item_title(item: Mapping[str, Any]) -> str:
    """An item as shown to a user: readable title plus "(year)" when known ("The Matrix (1999)")."""
    name = attributes.display_title(str(item.get("title") or "")) or str(item.get("raw_id", "?"))
    year = item.get("year")
    return f"{name} ({year})" if year else name
