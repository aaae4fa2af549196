"""Leak check: does an utterance name the target item?

The user simulator must never tell the recommender the target's title (docs/method.md 4.2 asks the
LLM three times; the authors never check it). `find_leak(text, item)` returns the fragment of
`text` that names the target, or None.

Rule (documented here because it decides what the simulator may say):

1. Title variants. A title is split into its main title and every top-level parenthesised or
   bracketed alternative ("Seven (a.k.a. Se7en)" -> "Seven", "Se7en";
   "City of Lost Children, The (Cité des enfants perdus, La)" -> "The City of Lost Children",
   "La Cité des enfants perdus"). A trailing "(YYYY)" is dropped, "a.k.a." is dropped, and the
   MovieLens article form "X, The" (also "X, The: Y" and foreign articles: La, Le, Les, Il, El,
   Der, Das, Die, ...) is normalised to "The X".
2. Normalisation. Text and titles are tokenised into words (Unicode letters and digits; internal
   apostrophes removed, so "Schindler's" -> "schindlers"), accents stripped, case folded, and a
   light plural fold applied ("monkeys" -> "monkey"). Hyphenated compounds and letter acronyms
   also yield their joined form ("Spider-Man" -> "spiderman", "M*A*S*H" -> "mash").
3. Distinctive words. A title word is distinctive unless it is a stop word (English and common
   foreign function words), a common genre/domain word (drama, sci-fi, movie, game, album,
   edition, platform names, ...), a single character, or a bare number or roman numeral.
   Distinctive words are deliberately strict: ordinary words such as "heat", "love" or "night"
   are distinctive when they are in the title, because a template simulator can always phrase
   around them. Bare numbers and roman numerals count only in a title name without any other
   distinctive word ("1941", "9 to 5", "xXx"). Any distinctive word anywhere in the text leaks.
4. Titles made only of common words ("Up", "It", "Her", "The Game", "The Rock"; "Heat" is not
   one of them, see 3). They have no distinctive word, so a plain word match would flag every
   "up" or "it". Such a title leaks only when used as a name: the whole title appears as a
   phrase, its first word is capitalised, and it does not start a sentence ("something like Up"
   leaks; "I'm up for anything" and "Up for a thriller?" do not). With `strict=True` (used by
   the template simulator, which can always rephrase) any occurrence counts, except of the
   values passed in `allow` (the film "Romance" may still be asked for as a romance).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any


def _word_set(words: str) -> frozenset[str]:
    """A frozenset of the whitespace-separated words of a string."""
    return frozenset(words.split())


STOP_WORDS = _word_set(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves us am shall may might must ever
    also yet upon onto via vs versus aka oh ok
    dont doesnt didnt cant couldnt wont wouldnt shouldnt isnt arent wasnt werent hasnt havent
    hadnt im ive id ill youre youve youd theyre theyve hes shes thats whats theres lets its aint
    le la les l el los las lo il gli un une una uno des du de del della di da dei et y e o der das
    dem des ein eine einer und zu im vom von och en het ett
    """
)

# Genre, medium and product words of the three domains: never distinctive on their own.
DOMAIN_WORDS = _word_set(
    """
    movie movies film films cinema picture pictures feature show series season episode episodes
    part chapter volume vol sequel trilogy saga collection collector collectors edition editions
    version cut director directors extended special anniversary remastered remaster restored
    deluxe standard ultimate complete definitive digital download code bundle pack set box
    drama dramas comedy comedies action thriller thrillers romance romances romantic adventure
    horrors crimes fantasies shooters platformers simulators
    adventures crime horror sci fi scifi science fiction fantasy mystery mysteries war western
    westerns musical musicals documentary documentaries animation animated children childrens
    kids family filmnoir noir imax genre genres listed
    game games video videogame videogames gaming gamer console platform playstation ps ps1 ps2
    ps3 ps4 ps5 psp vita xbox 360 nintendo switch wii ds 3ds gamecube n64 gameboy sega genesis
    dreamcast pc mac windows steam vr online
    shooter racing puzzle puzzles role playing roleplaying rpg strategy sports sport simulation
    simulator platformer fighting arcade coop multiplayer
    cd cds vinyl lp ep album albums record records disc discs single singles soundtrack
    soundtracks music songs song hits greatest best explicit import live remix remixes
    rock pop jazz blues classical country folk electronic dance rap hip hop metal punk soul
    reggae gospel hiphop
    """
)

_ROMAN_RE = re.compile(r"^(?=[ivxlc]+$)c{0,3}(xc|xl|l?x{0,3})(ix|iv|v?i{0,3})$")
_TOKEN_RE = re.compile(r"[^\W_]+(?:['’`][^\W_]+)*")
_APOSTROPHES = str.maketrans("", "", "'’`")
_YEAR_SUFFIX_RE = re.compile(r"\s*\(\s*\d{4}(?:\s*[-–]\s*\d{0,4})?\s*\)\s*$")
_AKA_RE = re.compile(r"^\s*(?:a\.k\.a\.|aka)\s+", re.IGNORECASE)
_ARTICLES = "The|A|An|Les|La|Le|L'|Il|El|Los|Las|Das|Der|Die|Den|Det|Un|Une|Una|Gli"
_ARTICLE_RE = re.compile(rf"^(?P<head>.+?),\s*(?P<art>{_ARTICLES})(?P<rest>\s*[:(\[\-–—].*)?$")
_SENTENCE_END = ".!?…\n"
_OPENERS = "\"'“‘([{«—–-*"


@dataclasses.dataclass(frozen=True)
class _Token:
    """One word of a text: normalised form, plural-folded form, span and capitalisation."""

    norm: str
    fold: str
    start: int
    end: int
    capitalised: bool


def _normalise_word(word: str) -> str:
    """Accent-stripped, case-folded word without apostrophes."""
    decomposed = unicodedata.normalize("NFKD", word)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.casefold().translate(_APOSTROPHES)


def _fold(norm: str) -> str:
    """Light plural fold on alphabetic words ("monkeys" -> "monkey", "glass" stays)."""
    if len(norm) > 3 and norm.isalpha() and norm.endswith("s") and not norm.endswith(("ss", "us")):
        return norm[:-1]
    return norm


def _tokenise(text: str) -> tuple[list[_Token], list[_Token]]:
    """Splits text into word tokens, plus joined compounds ("spider-man" -> "spiderman").

    Returns:
      (tokens, compounds): the plain words in order, and the joined forms of hyphenated
      compounds and single-letter acronyms ("M*A*S*H", "E.T.").
    """
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        norm = _normalise_word(m.group())
        if not norm:
            continue
        tokens.append(_Token(norm, _fold(norm), m.start(), m.end(), m.group()[0].isupper()))
    compounds = []
    i = 0
    while i < len(tokens):
        j = i
        hyphen = acronym = True
        while j + 1 < len(tokens):
            sep = text[tokens[j].end : tokens[j + 1].start]
            is_hyphen = sep in ("-", "‐", "‑")
            is_acr = (
                len(sep) == 1
                and not sep.isspace()
                and len(tokens[j].norm) == 1
                and len(tokens[j + 1].norm) == 1
            )
            if not (is_hyphen or is_acr):
                break
            hyphen &= is_hyphen
            acronym &= is_acr
            j += 1
        if j > i:
            norm = "".join(t.norm for t in tokens[i : j + 1])
            compounds.append(
                _Token(norm, _fold(norm), tokens[i].start, tokens[j].end, tokens[i].capitalised)
            )
        i = j + 1
    return tokens, compounds


def _split_alternatives(title: str) -> tuple[str, list[str]]:
    """Splits top-level "(...)" and "[...]" groups off a title: (main, [alternatives])."""
    main, alts, depth, buf = [], [], 0, []
    for i, ch in enumerate(title):
        if ch in "([" and depth == 0 and i > 0 and not title[i - 1].isspace():
            main.append(ch)  # "Frontière(s)": part of a word, not an alternative title.
        elif ch in "([":
            if depth == 0:
                buf = []
            else:
                buf.append(ch)
            depth += 1
        elif ch in ")]" and depth > 0:
            depth -= 1
            if depth == 0:
                alts.append("".join(buf))
            else:
                buf.append(ch)
        elif depth > 0:
            buf.append(ch)
        else:
            main.append(ch)
    if depth > 0:  # Unbalanced: keep the unclosed group as an alternative.
        alts.append("".join(buf))
    return "".join(main), alts


def fix_article(title: str) -> str:
    """MovieLens article form to natural order: "Matrix, The" -> "The Matrix".

    Also handles "Crow, The: City of Angels" -> "The Crow: City of Angels" and foreign
    articles ("Haine, La" -> "La Haine"). Other titles are returned stripped and unchanged.
    """
    title = " ".join(title.split())
    m = _ARTICLE_RE.match(title)
    if not m:
        return title
    art = m.group("art")
    sep = "" if art.endswith("'") else " "
    return f"{art}{sep}{m.group('head')}{m.group('rest') or ''}".strip()


def title_variants(title: str, keep_article_form: bool = False) -> list[str]:
    """All names of a title, article form normalised: main title first, then alternatives.

    With `keep_article_form`, the MovieLens forms ("Matrix, The") follow the normalised ones.
    """
    title = _YEAR_SUFFIX_RE.sub("", title or "")
    main, alts = _split_alternatives(title)
    parts = [p for p in (_AKA_RE.sub("", p).strip(" ,;:-–—") for p in [main, *alts]) if p]
    out = [fix_article(p) for p in parts]
    if keep_article_form:
        out += [" ".join(p.split()) for p in parts]
    return [v for v in dict.fromkeys(out) if v]


def _is_weak(norm: str) -> bool:
    """Numbers and roman numerals: distinctive only in a title name without other words."""
    return norm.isdigit() or bool(_ROMAN_RE.match(norm))


def _is_common(norm: str) -> bool:
    """True for words that never identify a title on their own."""
    return norm in STOP_WORDS or norm in DOMAIN_WORDS or len(norm) < 2 or _is_weak(norm)


@dataclasses.dataclass(frozen=True)
class _Signature:
    """Precomputed leak signature of one title."""

    distinctive: frozenset[str]  # Normalised distinctive words, as shown to users.
    folds: frozenset[str]  # Their plural-folded forms, used for matching.
    name_phrases: tuple[tuple[str, ...], ...]  # Folded token runs of all-common variants.


@functools.lru_cache(maxsize=200_000)
def _signature(title: str) -> _Signature:
    """Builds the distinctive words and name phrases of a title (cached)."""
    distinctive: set[str] = set()
    phrases = []
    for variant in title_variants(title, keep_article_form=True):
        tokens, compounds = _tokenise(variant)
        own = {t.norm for t in tokens + compounds if not _is_common(t.norm)}
        if not own:  # "1941", "xXx", "9 to 5": their numbers and numerals are the name.
            own = {t.norm for t in tokens + compounds if _is_weak(t.norm)}
        distinctive |= own
        if not own and tokens:
            phrases.append(tuple(t.fold for t in tokens))
    return _Signature(
        frozenset(distinctive),
        frozenset(_fold(w) for w in distinctive),
        tuple(dict.fromkeys(phrases)),
    )


def distinctive_words(title: str) -> set[str]:
    """The distinctive words of a title (normalised: lower case, no accents or apostrophes).

    Args:
      title: the item title, e.g. "Matrix, The" or "Seven (a.k.a. Se7en)".

    Returns:
      e.g. {"matrix"} or {"seven", "se7en"}; empty for titles made only of common words
      ("Up", "The Game"), which `find_leak` matches as names instead.
    """
    return set(_signature(title).distinctive)


def _at_sentence_start(text: str, start: int) -> bool:
    """True if position `start` begins a sentence (text start or after . ! ? or a newline)."""
    before = text[:start]
    stripped = before.rstrip()
    if "\n" in before[len(stripped) :]:
        return True
    stripped = stripped.rstrip(_OPENERS).rstrip()
    return not stripped or stripped[-1] in _SENTENCE_END


def _title_of(item: Mapping[str, Any] | str) -> str:
    if isinstance(item, str):
        return item
    try:
        return str(item["title"] or "")
    except (KeyError, TypeError) as e:
        raise TypeError(
            f"find_leak needs an item dict with a 'title' or a str, got {item!r}"
        ) from e


def find_leak(
    text: str,
    item: Mapping[str, Any] | str,
    *,
    strict: bool = False,
    allow: Iterable[str] = (),
) -> str | None:
    """Returns the fragment of `text` that names the target item, or None.

    Args:
      text: an utterance.
      item: the target item dict (its "title" is used) or the title itself.
      strict: also treat a title made only of common words as named when it appears in any
        case or position ("it", "up"); the template simulator uses this, since it can always
        rephrase, so its output never contains such a title even as an ordinary word.
      allow: in strict mode, texts (e.g. the stated condition values) whose occurrence is not
        a leak: a film titled "Romance" may still be asked for as a romance.

    Returns:
      The leaking fragment exactly as written in `text` (a distinctive word, a joined compound,
      or the whole title used as a name), or None when the text does not name the target.
    """
    title = _title_of(item)
    if not text or not title.strip():
        return None
    sig = _signature(title)
    tokens, compounds = _tokenise(text)
    if sig.folds:
        for tok in tokens + compounds:
            if tok.fold in sig.folds:
                return text[tok.start : tok.end]
    folds = [t.fold for t in tokens]
    allowed = {tuple(t.fold for t in _tokenise(a)[0]) for a in allow} if strict else set()
    for phrase in sig.name_phrases:
        if phrase in allowed:
            continue
        n = len(phrase)
        for i in range(len(tokens) - n + 1):
            if tuple(folds[i : i + n]) != phrase:
                continue
            first = tokens[i]
            if strict or (first.capitalised and not _at_sentence_start(text, first.start)):
                return text[first.start : tokens[i + n - 1].end]
    return None
