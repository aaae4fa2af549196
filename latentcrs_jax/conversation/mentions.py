"""Titles written inside a sentence: "I loved Alien and Heat", "something like The Matrix but
funnier" -> the items they name, resolved by the chat's `TitleIndex` (the same rules).

Scanning (`find_titles`): word runs of the message, longest first and left to right, whose lookup
key is exactly a name of the index (the main title, its "The ..." form or a parenthesised
alternative); a year right after the run ("Heat (1995)", "Heat 1995") joins it and picks among
same-named items. Runs never overlap. To keep ordinary words from reading as titles, a run is
taken only if it
* starts with a capital letter or a digit, or is quoted, when its key is one word or only
  common words ("Up", "Heat", "Speed", "The Others"), and is not then the message's first word
  (sentence-initial capitals say nothing) unless a year follows it;
* otherwise (two or more words, at least two of them not common) in any case ("the dark knight").
A title is negated ("not Alien", "I hated Heat", "except Titanic") when a negation cue stands in
the three words before it; the chat then does not take it as liked.
"""

from __future__ import annotations

import dataclasses
import re

from latentcrs_jax.conversation.titles import TitleIndex, TitleMatch, title_key

MAX_WORDS = 12  # Longest title run tried, in words.
_WORD_RE = re.compile(r"[\w'’·&:.,!?()-]+|[\"“”«»]")
_YEAR_RE = re.compile(r"^\(?(1[89]\d\d|20\d\d)\)?[.,!?;:]*$")
_QUOTES = set('"“”«»')
_COMMON_WORDS = """a an the and or of in on at to for with from by my me i you it is was be this
that these those some something anything like love loved movie movies film films good great new
old more less other others one two time day night man men woman women world life big little best
last first end game home house up down out off go get now then there here what who how why when
where all no not but so just very really about"""
_COMMON = frozenset(_COMMON_WORDS.split())
_NEGATIONS = (
    ("not",),
    ("no",),
    ("never",),
    ("hate",),
    ("hated",),
    ("dislike",),
    ("disliked",),
    ("except",),
    ("besides",),
    ("without",),
    ("nothing", "like"),
    ("didn't", "like"),
    ("didnt", "like"),
    ("did", "not", "like"),
    ("don't", "like"),
    ("dont", "like"),
    ("don't", "want"),
    ("other", "than"),
)


@dataclasses.dataclass(frozen=True)
class FoundTitle:
    """A title found in a message: its characters, the lookup and whether it is negated."""

    start: int  # Character offsets into the message.
    end: int
    text: str
    match: TitleMatch
    negated: bool = False


def _strip(word: str) -> str:
    return word.strip(".,!?;:'’\"")


def _negated(words: list[str], start: int) -> bool:
    before = [_strip(w).lower().replace("’", "'") for w in words[max(0, start - 3) : start]]
    for cue in _NEGATIONS:
        n = len(cue)
        for k in range(len(before) - n + 1):
            if tuple(before[k : k + n]) == cue:
                return True
    return False


def _acceptable(words: list[str], start: int, stop: int, key: str, has_year: bool) -> bool:
    significant = [w for w in key.split() if w not in _COMMON]
    if len(key.split()) >= 2 and len(significant) >= 2:
        return True
    first = next((w for w in words[start:stop] if w not in _QUOTES), "")
    quoted = start > 0 and words[start - 1] in _QUOTES
    capital = bool(first) and (first[0].isupper() or first[0].isdigit())
    if quoted or has_year:
        return True
    sentence_start = start == 0 or words[start - 1][-1:] in ".!?"
    return capital and not sentence_start


def find_titles(text: str, index: TitleIndex, max_words: int = MAX_WORDS) -> list[FoundTitle]:
    """The titles named in a message, in order (see the module docstring).

    Only runs whose key is a name of `index` are looked up, so a message costs a few dictionary
    probes per word, never a fuzzy search.
    """
    spans = [(m.start(), m.end()) for m in _WORD_RE.finditer(text or "")]
    words = [text[a:b] for a, b in spans]
    found: list[FoundTitle] = []
    i = 0
    while i < len(words):
        hit = None
        for n in range(min(max_words, len(words) - i), 0, -1):
            run = words[i : i + n]
            if any(w in _QUOTES for w in run):
                continue
            name = text[spans[i][0] : spans[i + n - 1][1]].rstrip(".,!?;:")
            if name.count("(") != name.count(")"):
                continue
            key = title_key(name)
            if not key or not index.has_name(key):
                continue
            year_m = _YEAR_RE.match(words[i + n]) if i + n < len(words) else None
            has_year = year_m is not None
            if not _acceptable(words, i, i + n, key, has_year):
                continue
            query = f"{name} ({year_m.group(1)})" if has_year else name
            match = index.lookup(query)
            if match.status == "unknown":
                continue
            last = i + n if has_year else i + n - 1
            end = spans[last][0] + len(words[last].rstrip(".,!?;:"))
            hit = FoundTitle(spans[i][0], end, text[spans[i][0] : end], match, _negated(words, i))
            i += n + int(has_year)
            break
        if hit is None:
            i += 1
        else:
            found.append(hit)
    return found
