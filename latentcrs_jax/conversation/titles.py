"""Fuzzy title lookup for the chat: "Alien; Heat (1995)" -> item ids, with suggestions.

Every name of an item (the main title with its article form fixed, "Matrix, The" ->
"The Matrix", the MovieLens form itself, and parenthesised alternatives) is indexed under a key:
accents stripped, case folded, punctuation removed, a leading article dropped. A query resolves,
in order, by:
1. an exact key match of the whole query (so "1984" or "Blade Runner 2049" stay titles);
2. an exact key match of the query without a trailing year ("Heat (1995)", "Heat 1995"), the
   year then choosing among same-named items;
3. a fuzzy match (difflib ratio over the keys, and keys that contain the query as whole words):
   one clear candidate (ratio >= `accept_ratio`, well ahead of the next) is taken and reported
   as a guess, and so is the only name that contains the query ("Shawshank"); several such
   names make the query ambiguous (names starting with it, then the shortest, suggested
   first); otherwise the closest names are suggested. When the query states a year and some
   candidate is from that year, candidates from other (known) years are not taken.
Several items under one name (two "Heat"s) without a year that decides between them are
ambiguous: the user is shown each with its year.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax.simulator import leak

_YEAR_RE = re.compile(r"^(?P<name>.*?)[\s,]*[(\[]?\s*(?P<year>1[89]\d\d|20\d\d)\s*[)\]]?\s*$")
_ARTICLES = ("the ", "a ", "an ")


def title_key(text: str) -> str:
    """Lookup key of a name: accents stripped, case folded, punctuation out, no leading article."""
    decomposed = unicodedata.normalize("NFKD", text or "")
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()
    plain = re.sub(r"['’`]", "", plain).replace("&", " and ")
    key = " ".join(re.sub(r"[^\w]+", " ", plain).split())
    for article in _ARTICLES:
        if key.startswith(article) and len(key) > len(article):
            return key[len(article) :]
    return key


@dataclasses.dataclass(frozen=True)
class TitleMatch:
    """The outcome of one lookup.

    Attributes:
      query: what the user typed.
      status: "exact" | "fuzzy" (a confident guess) | "ambiguous" | "unknown".
      item: the item id taken (exact or fuzzy), else None.
      suggestions: item ids to offer (ambiguous or unknown), best first.
    """

    query: str
    status: str
    item: int | None = None
    suggestions: tuple[int, ...] = ()


class TitleIndex:
    """Name -> item ids over an items table.

    Args:
      items: the items table (items[0] is PAD).
      accept_ratio: a lone fuzzy candidate at least this similar is taken as a guess.
      max_suggestions: how many suggestions to return.
    """

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        accept_ratio: float = 0.88,
        max_suggestions: int = 5,
    ):
        self.items = items
        self.accept_ratio = float(accept_ratio)
        self.max_suggestions = int(max_suggestions)
        self._ids: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            title = str(item.get("title") or "")
            if i == 0 or not title:
                continue
            for name in leak.title_variants(title, keep_article_form=True) or [title]:
                key = title_key(name)
                if key and i not in self._ids.setdefault(key, []):
                    self._ids[key].append(i)
        self._keys = list(self._ids)

    def has_name(self, key: str) -> bool:
        """Whether `key` (a `title_key`) is exactly a name of some item."""
        return key in self._ids

    def _year(self, item_id: int) -> int | None:
        year = self.items[item_id].get("year")
        return int(year) if year is not None and str(year).isdigit() else None

    def _first(self, ids: Sequence[int]) -> tuple[int, ...]:
        return tuple(dict.fromkeys(ids))[: self.max_suggestions]

    def _exact(self, key: str, year: int | None) -> TitleMatch | None:
        ids = self._ids.get(key, [])
        if year is not None:
            ids = [i for i in ids if self._year(i) == year]
        if len(ids) == 1:
            return TitleMatch("", "exact", ids[0])
        if len(ids) > 1:
            return TitleMatch("", "ambiguous", None, self._first(ids))
        return None

    def lookup(self, query: str) -> TitleMatch:
        """Resolves one title as typed (see the module docstring)."""
        query = " ".join(str(query).split())
        key = title_key(query)
        if not key:
            return TitleMatch(query, "unknown")
        found = self._exact(key, None)
        year = None
        m = _YEAR_RE.match(query)
        if m and title_key(m.group("name")):
            year = int(m.group("year"))
            with_year = self._exact(title_key(m.group("name")), year)
            if with_year is not None and (found is None or found.status == "ambiguous"):
                found = with_year
            elif found is None and title_key(m.group("name")) in self._ids:
                # The name exists, but not from that year: offer its years.
                ids = self._ids[title_key(m.group("name"))]
                return TitleMatch(query, "ambiguous", None, self._first(ids))
            key = title_key(m.group("name"))
        if found is not None:
            return dataclasses.replace(found, query=query)
        return self._fuzzy(query, key, year)

    def _fuzzy(self, query: str, key: str, year: int | None) -> TitleMatch:
        close: dict[int, float] = {}
        for k in difflib.get_close_matches(key, self._keys, n=20, cutoff=0.6):
            ratio = difflib.SequenceMatcher(None, key, k).ratio()
            for i in self._ids[k]:
                close[i] = max(close.get(i, 0.0), ratio)
        contains: dict[int, tuple[int, int]] = {}  # Names holding the query as whole words.
        if len(key) >= 3:
            pattern = re.compile(rf"(?:^| ){re.escape(key)}(?: |$)")
            for k in self._keys:
                if pattern.search(k):
                    rank = (0 if k.startswith(key) else 1, len(k))
                    for i in self._ids[k]:
                        contains[i] = min(contains.get(i, rank), rank)
        if year is not None:
            contains = {i: n for i, n in contains.items() if self._year(i) == year} or contains
            close = {i: r + (0.05 if self._year(i) == year else 0.0) for i, r in close.items()}
            if any(self._year(i) == year for i in (*close, *contains)):
                # A name of the stated year exists: names of other known years are not taken
                # ("Terminator 2 (1991)" is not "Terminator, The" (1984)).
                close = {i: r for i, r in close.items() if self._year(i) in (year, None)}
        ranked = sorted(close, key=lambda i: (-close[i], i))
        best = close[ranked[0]] if ranked else 0.0
        runner_up = close[ranked[1]] if len(ranked) > 1 else 0.0
        if best >= self.accept_ratio and best - runner_up >= 0.04:
            return TitleMatch(query, "fuzzy", ranked[0])
        if len(contains) == 1:
            return TitleMatch(query, "fuzzy", next(iter(contains)))
        by_length = sorted(contains, key=lambda i: (contains[i], i))  # Prefix, then shortest.
        suggestions = tuple(dict.fromkeys(by_length + ranked))[: self.max_suggestions]
        return TitleMatch(query, "ambiguous" if contains else "unknown", None, suggestions)


def split_titles(text: str) -> list[str]:
    """ "Alien; Heat (1995)" -> ["Alien", "Heat (1995)"] (separators: ";" "|" and new lines)."""
    return [t.strip() for t in re.split(r"[;|\n]", text or "") if t.strip()]
