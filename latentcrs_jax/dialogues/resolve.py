"""Mentions -> catalogue item ids, with the chat's fuzzy title matcher, and coverage counts.

A mention with a catalogue raw id (generic format `item_id`) resolves by that id. Otherwise its
title goes through `conversation.titles.TitleIndex.lookup` (case, accents and punctuation
folded, "Matrix, The" = "The Matrix", parenthesised alternative titles, a trailing year choosing
among same-named items, and a confident fuzzy guess). An "exact" or "fuzzy" match resolves; an
ambiguous one (two items under the name and no year deciding) or an unknown one does not.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax.conversation.titles import TitleIndex
from latentcrs_jax.dialogues.readers import Mention


@dataclasses.dataclass
class Coverage:
    """How much of the data maps onto the catalogue.

    Attributes:
      mentions: mention occurrences (a movie mentioned in two messages counts twice).
      resolved: those that resolved to an item.
      fuzzy: those resolved by a fuzzy guess rather than an exact name.
      unresolved_titles: title -> occurrences that did not resolve.
    """

    mentions: int = 0
    resolved: int = 0
    fuzzy: int = 0
    unresolved_titles: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def top_unresolved(self, n: int = 10) -> list[tuple[str, int]]:
        """The `n` most frequent unresolved titles (ties by title)."""
        return sorted(self.unresolved_titles.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {
            "mentions": self.mentions,
            "resolved": self.resolved,
            "fuzzy": self.fuzzy,
            "resolved_share": self.resolved / self.mentions if self.mentions else 0.0,
            "top_unresolved": [{"title": t, "count": c} for t, c in self.top_unresolved(top)],
        }


class Resolver:
    """Resolves mentions onto an items table (items[0] is PAD), memoised per (title, id).

    Args:
      items: the items table of the trained workdir's dataset.
      index: a prebuilt `TitleIndex` over the same items (built here when None).
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], index: TitleIndex | None = None):
        self.items = items
        self.index = index or TitleIndex(items)
        self._raw = {str(it.get("raw_id")): i for i, it in enumerate(items) if i > 0}
        self._memo: dict[tuple[str, str | None], tuple[int | None, str]] = {}
        self.coverage = Coverage()

    def lookup(self, mention: Mention) -> tuple[int | None, str]:
        """(item id or None, status "id" | "exact" | "fuzzy" | "ambiguous" | "unknown")."""
        key = (mention.title, mention.item_id)
        if key not in self._memo:
            if mention.item_id is not None and mention.item_id in self._raw:
                found = (self._raw[mention.item_id], "id")
            elif not mention.title:
                found = (None, "unknown")
            else:
                match = self.index.lookup(mention.title)
                found = (match.item, match.status)
            self._memo[key] = found
        return self._memo[key]

    def resolve(self, mention: Mention) -> int | None:
        """The mention's item id (None when unresolved), counted in `coverage`."""
        item, status = self.lookup(mention)
        self.coverage.mentions += 1
        if item is None:
            shown = mention.title or (
                f"<id {mention.item_id}>" if mention.item_id else "<no title>"
            )
            self.coverage.unresolved_titles[shown] += 1
        else:
            self.coverage.resolved += 1
            self.coverage.fuzzy += status == "fuzzy"
        return item
