"""Stated features: what a user's words say about the item attributes, matched to the dataset.

The vocabulary comes from the items table: MovieLens genres, decades and years (from the
release year) and user tags; Amazon categories (the top-level domain entry and generic levels
dropped, as the simulator does). A feature is a `(field, key)` pair whose key is the attribute's
normalised form ("genre", "sci fi"); `FeatureVocab.label` gives the data's spelling ("Sci-Fi").

Matching rule (`FeatureVocab.match`):
* Text and attribute names are split into words: accents stripped, case folded, apostrophes
  removed ("children's" -> "childrens"), hyphens and "&" split ("sci-fi" -> "sci fi",
  "action & adventure" -> "action and adventure"), and a light plural fold applied to both
  sides ("comedies" -> "comedy", "thrillers" -> "thriller", "childrens" -> "children";
  "movie(s)" -> "movy", so a key is a matching form, not always an English word).
* Each attribute name is a phrase; genres also have a few everyday forms ("animated",
  "cartoon" -> Animation; "kids", "children's" -> Children; "scary" -> Horror; "funny" ->
  Comedy; "science fiction" -> Sci-Fi). The longest phrase starting at a word wins and phrases
  never overlap ("classic rock" is not also "rock").
* Decades: "1990s", "90s", "'90s", "nineties"; years: "1995". Only values that some item has
  are kept.
* Negation: a cue ("no", "not", "nothing", "without", "never", "don't", "avoid", "hate",
  "anything but", "instead of", "rather than", ...) followed within `_NEG_WINDOW` words, in the
  same clause, by a feature negates that feature and any feature chained to it by "or"/"nor"/
  "and" ("no horror or comedy"). Clauses end at punctuation and at "but", "though", "however".
  "don't mind", "nothing but" and "not only" are not negations. Negated features are excluded,
  not included.
* Titles the caller passes in `ignore_titles` (the user's liked items) are blanked first, so
  "I loved Star Wars" does not state the genre War.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from latentcrs_jax.simulator import attributes, leak

Feature = tuple[str, str]  # (field, normalised key), e.g. ("genre", "sci fi").

FIELDS = ("genre", "decade", "year", "tag", "category")
_NO_GENRE = "(no genres listed)"
_BOUNDARY = "|"  # Token that ends a clause.
_MASKED = "\x00"  # Token of a blanked title word: not a feature, not a boundary.
_TOKEN_RE = re.compile(r"[^\W_]+(?:['’‘`][^\W_]+)*|&|[.!?;:,()\[\]\"“”]")
_NEG_WINDOW = 5  # Words allowed between a negation cue and the first negated feature.


def _words(text: str) -> frozenset[str]:
    """The whitespace-separated words of a string."""
    return frozenset(text.split())


# Everyday words for genres, keyed by the genre's normalised key (see `normalise`).
_GENRE_ALIASES: dict[str, tuple[str, ...]] = {
    "animation": ("animated", "cartoon", "anime"),
    "children": ("kids", "kid", "family", "childrens", "child"),
    "sci fi": ("scifi", "science fiction", "sci fi"),
    "comedy": (
        "funny",
        "funnier",
        "funniest",
        "comedic",
        "humorous",
        "hilarious",
        "romcom",
        "rom com",
    ),
    "horror": ("scary", "scarier", "scariest", "spooky", "frightening", "creepy", "terrifying"),
    "romance": ("romantic", "love story", "romcom", "rom com"),
    "thriller": ("suspense", "suspenseful", "thrilling"),
    "film noir": ("noir",),
    "mystery": ("mysterious", "whodunit"),
    "drama": ("dramatic",),
    "adventure": ("adventurous",),
    "western": ("cowboy",),
    "crime": ("gangster",),
}
_DECADE_WORDS = {  # Spelled-out decades, replaced by "1920s".. before plural folding.
    "twenties": "1920s",
    "thirties": "1930s",
    "forties": "1940s",
    "fifties": "1950s",
    "sixties": "1960s",
    "seventies": "1970s",
    "eighties": "1980s",
    "nineties": "1990s",
}
_DECADE_RE = re.compile(r"^(\d{2}|\d{4})s$")
_YEAR_RE = re.compile(r"^(1[89]\d\d|20\d\d)$")
_NEG_CUES = _words(
    "no not nothing without never dont doesnt didnt isnt arent wasnt wont wouldnt cant avoid "
    "avoiding hate dislike exclude excluding except none neither nor skip"
)
_NEG_BIGRAMS = frozenset(
    [("anything", "but"), ("instead", "of"), ("rather", "than"), ("other", "than")]
)
_NOT_NEGATION_NEXT = frozenset(["mind", "care", "matter", "only", "just", "sure", "but"])
_CLAUSE_WORDS = frozenset(["but", "though", "although", "however", "yet", "whereas"])
_CHAIN = frozenset(["or", "nor", "and"])
_CHAIN_FILLER = frozenset(["a", "an", "any"])


# ----------------------------------------------------------------------------------- tokens
def _fold(word: str) -> str:
    """Light plural fold ("comedies" -> "comedy", "thrillers" -> "thriller")."""
    if not word.isalpha():
        return word
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("ie"):  # "movie" and "movies" both give "movy".
        return word[:-2] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_GENERIC_TAG_WORDS = frozenset(  # Tags made only of these say nothing (folded forms).
    _fold(w) for w in leak.STOP_WORDS | _words("movie film game video album cd record good bad")
)


def _plain(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def tokens(text: str) -> list[str]:
    """Folded word tokens of a text; clause punctuation becomes the boundary token "|".

    Args:
      text: any string.

    Returns:
      Words lower-cased, accent-stripped, without apostrophes and plural-folded; "&" -> "and".
    """
    out = []
    for m in _TOKEN_RE.finditer(_plain(text).replace("-", " ")):
        tok = m.group()
        if tok == "&":
            out.append("and")
        elif not tok[0].isalnum():
            if tok not in '"“”':
                out.append(_BOUNDARY)
        else:
            word = re.sub(r"['’‘`]", "", tok)
            out.append(_DECADE_WORDS.get(word) or _fold(word))
    return out


def normalise(phrase: str) -> str:
    """The key of an attribute name: its folded words joined by spaces ("Sci-Fi" -> "sci fi")."""
    return " ".join(t for t in tokens(phrase) if t != _BOUNDARY)


def _decade_value(tok: str) -> int | None:
    """1990 for "1990s" and "90s" (spelled-out decades arrive as "1990s"); None otherwise."""
    m = _DECADE_RE.match(tok)
    if not m:
        return None
    digits = m.group(1)
    if len(digits) == 2:
        if digits[1] != "0":
            return None
        value = int(digits)
        return (1900 if value >= 20 else 2000) + value
    return int(digits) if digits.endswith("0") else None


# ---------------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Match:
    """One stated feature found in a text.

    Attributes:
      feature: (field, key).
      negated: the user excludes it ("no horror").
      start: index of its first word in `tokens(text)`.
      end: one past its last word.
    """

    feature: Feature
    negated: bool
    start: int
    end: int


@dataclasses.dataclass
class StatedFeatures:
    """Included and excluded features of one text, each in order of first mention."""

    included: list[Feature] = dataclasses.field(default_factory=list)
    excluded: list[Feature] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------------------- vocabulary
class FeatureVocab:
    """The attribute vocabulary of an items table and the per-item feature sets.

    Args:
      items: the items table; items[i] is the dict of item id i (items[0] is PAD).
      domain: "movies" | "video games" | "CDs" (drops the top-level category).
      use_tags: include user tags (MovieLens ml-latest-small has them).
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], domain: str, use_tags: bool = True):
        self.domain = domain
        self._labels: dict[Feature, str] = {}
        self._phrases: dict[tuple[str, ...], set[Feature]] = {}
        self._decades: set[int] = set()
        self._years: set[int] = set()
        self.item_features: list[frozenset[Feature]] = []
        raw = [self._raw_features(item, domain, use_tags) for item in items]
        # Genres first, so that a tag spelled like a genre (or its alias) maps to the genre.
        # A genre's own name wins over another genre's alias; "romcom" names two genres.
        genre_forms: dict[str, set[Feature]] = {}
        for feats in raw:
            for field, name in feats:
                key = normalise(name) if field == "genre" else ""
                if key and ("genre", key) not in self._labels:
                    self._labels[("genre", key)] = name
                    genre_forms[key] = {("genre", key)}
        for _, key in list(self._labels):
            for form in map(normalise, _GENRE_ALIASES.get(key, ())):
                if ("genre", form) not in self._labels:
                    genre_forms.setdefault(form, set()).add(("genre", key))
        for form, feats_of_form in genre_forms.items():
            for feature in feats_of_form:
                self._add_phrase(form, feature)
        for feats in raw:
            item_set = set()
            for field, name in feats:
                key = normalise(name)
                if not key:
                    continue
                if field == "genre":
                    item_set.add(("genre", key))
                    continue
                if field == "tag" and key in genre_forms:
                    item_set |= genre_forms[key]
                    continue
                feature = (field, key)
                if field in ("decade", "year"):
                    (self._decades if field == "decade" else self._years).add(int(key[:4]))
                elif field == "tag" and set(key.split()) <= _GENERIC_TAG_WORDS:
                    continue
                else:
                    self._add_phrase(key, feature)
                    self._add_phrase(" ".join(tokens(name)).strip(" |"), feature)
                self._labels.setdefault(feature, name)
                item_set.add(feature)
            self.item_features.append(frozenset(item_set))
        self._genre_forms = genre_forms
        self._max_len = max((len(p) for p in self._phrases), default=1)

    @staticmethod
    def _raw_features(item: Mapping[str, Any], domain: str, use_tags: bool) -> list[Feature]:
        feats: list[Feature] = []
        for g in item.get("genres") or ():
            g = str(g).strip()
            if g and g.casefold() != _NO_GENRE:
                feats.append(("genre", g))
        year = item.get("year")
        if year is not None and str(year).strip().isdigit():
            feats.append(("decade", attributes.decade_of(int(year))))
            feats.append(("year", str(int(year))))
        if use_tags:
            feats += [("tag", " ".join(str(t).split())) for t in item.get("tags") or ()]
        cats = attributes.clean_categories(item.get("categories") or (), domain)
        feats += [("category", c) for c in cats]
        return feats

    def _add_phrase(self, key: str, feature: Feature) -> None:
        words = tuple(key.split())
        if words:
            self._phrases.setdefault(words, set()).add(feature)

    # ----------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._labels)

    def features(self) -> list[Feature]:
        """Every feature of the vocabulary (sorted)."""
        return sorted(self._labels)

    def feature_of(self, field: str, value: str) -> Feature | None:
        """The vocabulary feature of an item attribute (a simulator condition), or None.

        Args:
          field: "genre" | "decade" | "year" | "tag" | "category".
          value: the attribute as the items table spells it ("Sci-Fi", "1990s", "anime").

        Returns:
          The feature items carry for it (a tag spelled like a genre maps to the genre).
        """
        key = normalise(value)
        if field in ("genre", "tag") and key in self._genre_forms:
            return min(self._genre_forms[key])
        feature = (field, key)
        return feature if feature in self._labels else None

    def label(self, feature: Feature) -> str:
        """The data's spelling of a feature ("Sci-Fi", "1990s", "twist ending")."""
        return self._labels.get(tuple(feature), feature[1])

    def features_of(self, item_id: int) -> frozenset[Feature]:
        """The features of one item id (empty for PAD or an unknown id)."""
        if 0 <= item_id < len(self.item_features):
            return self.item_features[item_id]
        return frozenset()

    def _time_feature(self, tok: str) -> Feature | None:
        decade = _decade_value(tok)
        if decade is not None and decade in self._decades:
            return ("decade", f"{decade}s")
        if _YEAR_RE.match(tok) and int(tok) in self._years:
            return ("year", tok)
        return None

    def _spans(self, toks: Sequence[str]) -> list[tuple[int, int, set[Feature]]]:
        """Non-overlapping longest matches: (start, end, features)."""
        out, i = [], 0
        while i < len(toks):
            time_feature = self._time_feature(toks[i])
            found = (i, i + 1, {time_feature}) if time_feature is not None else None
            for n in range(min(self._max_len, len(toks) - i), 0, -1):
                if found is not None:
                    break
                feats = self._phrases.get(tuple(toks[i : i + n]))
                if feats:
                    found = (i, i + n, set(feats))
            if found is None:
                i += 1
                continue
            out.append(found)
            i = found[1]
        return out

    def match(self, text: str, ignore_titles: Iterable[str] = ()) -> list[Match]:
        """Every feature stated in `text`, in order, with its negation flag.

        Args:
          text: a user utterance (any length, any language; unmatched words are ignored).
          ignore_titles: item titles to blank before matching (e.g. the user's liked items).

        Returns:
          Matches ordered by position; one span may give several features ("funny" is the
          Comedy genre and, where items carry it, the tag "funny").
        """
        toks = tokens(text)
        for title in ignore_titles:
            _blank(toks, title)
        spans = self._spans(toks)
        negated = _negated_spans(toks, spans)
        return [
            Match(f, neg, start, end)
            for (start, end, feats), neg in zip(spans, negated)
            for f in sorted(feats)
        ]

    def stated(self, text: str, ignore_titles: Iterable[str] = ()) -> StatedFeatures:
        """Included and excluded features of one text (a later mention overrides an earlier)."""
        state: dict[Feature, bool] = {}
        for m in self.match(text, ignore_titles):
            state.pop(m.feature, None)
            state[m.feature] = m.negated
        return StatedFeatures(
            included=[f for f, neg in state.items() if not neg],
            excluded=[f for f, neg in state.items() if neg],
        )


@functools.lru_cache(maxsize=100_000)
def _title_phrases(title: str) -> tuple[tuple[str, ...], ...]:
    """Folded word runs of every name of a title (article form normalised)."""
    names = leak.title_variants(title) or [title]
    out = []
    for name in names:
        words = tuple(t for t in tokens(name) if t != _BOUNDARY)
        if words:
            out.append(words)
    return tuple(out)


def _blank(toks: list[str], title: str) -> None:
    """Replaces every occurrence of a title's words in `toks` by the masked token (in place)."""
    for phrase in _title_phrases(title):
        n = len(phrase)
        i = 0
        while i + n <= len(toks):
            if tuple(toks[i : i + n]) == phrase:
                toks[i : i + n] = [_MASKED] * n
                i += n
            else:
                i += 1


def _cue_ends(toks: Sequence[str]) -> list[int]:
    """Indices one past each negation cue."""
    ends = []
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else ""
        if tok in _NEG_CUES and nxt not in _NOT_NEGATION_NEXT:
            ends.append(i + 1)
        elif (tok, nxt) in _NEG_BIGRAMS:
            ends.append(i + 2)
    return ends


def _negated_spans(toks: Sequence[str], spans: Sequence[tuple[int, int, Any]]) -> list[bool]:
    """Which feature spans fall in the scope of a negation cue (see the module docstring)."""
    negated = [False] * len(spans)
    inside = {i for s, e, _ in spans for i in range(s, e)}
    for cue_end in _cue_ends(toks):
        if cue_end - 1 in inside:  # The cue word is part of a feature ("not funny" tag).
            continue
        first = None
        for k, (start, _, _) in enumerate(spans):
            if start < cue_end:
                continue
            gap = toks[cue_end:start]
            if len(gap) <= _NEG_WINDOW and not any(
                t == _BOUNDARY or t in _CLAUSE_WORDS for t in gap
            ):
                first = k
            break
        if first is None:
            continue
        negated[first] = True
        k = first
        while k + 1 < len(spans):
            gap = toks[spans[k][1] : spans[k + 1][0]]
            if not gap or gap[0] not in _CHAIN:
                break
            filler = _CHAIN_FILLER if gap[0] != "and" else frozenset(["any"])
            if not all(t in filler for t in gap[1:]):
                break
            k += 1
            negated[k] = True
    return negated
