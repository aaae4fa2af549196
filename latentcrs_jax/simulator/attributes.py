"""Item attributes the simulator may reveal, as (field, value) conditions.

An item is the data layer's dict: {"raw_id", "title", "year", "genres", "tags", "categories",
"description", "features", "text"}. Conditions are domain-agnostic: whatever fields an item has
become conditions, so MovieLens items give genres, decade, year and tags, and Amazon items give
categories, features and description phrases.

Fields (the first element of a condition):
  genre        a genre string as in the data ("Sci-Fi", "Children's")
  decade       "1990s", from the year
  year         "1995" (more specific than the decade; revealed after it)
  tag          a user tag ("twist ending")
  category     an Amazon category below the top level ("PlayStation 4", "Shooter")
  feature      an Amazon feature bullet, short ones only ("Genre: Action")
  description  a phrase or keyword from the description ("online co-op")
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax.simulator import leak

Condition = tuple[str, str]

FIELDS = ("genre", "decade", "year", "tag", "category", "feature", "description")

# Category strings that only name the domain or a generic level ("Games").
_GENERIC_CATEGORIES = frozenset(
    [
        "games",
        "video games",
        "cds & vinyl",
        "cds and vinyl",
        "cds",
        "vinyl",
        "music",
        "movies",
        "movies & tv",
        "movies and tv",
        "all",
        "",
    ]
)
_NO_GENRE = "(no genres listed)"
_MAX_FEATURE_WORDS = 12
_MAX_FEATURE_CHARS = 80
_MAX_PHRASE_WORDS = 6
_PHRASE_RE = re.compile(r"\b(?:with|featuring|including|about)\s+([^.;:!?()\[\]]+)", re.I)
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z\-']+")


def decade_of(year: int) -> str:
    """1995 -> "1990s"."""
    return f"{(int(year) // 10) * 10}s"


def display_title(title: str, max_chars: int = 60) -> str:
    """A title as a user would write it: article form fixed, alternatives and year dropped.

    Long (Amazon) titles are cut at " - ", ":", "," or "|" when they exceed `max_chars`.
    """
    variants = leak.title_variants(title)
    name = variants[0] if variants else (title or "").strip()
    if len(name) > max_chars:
        for sep in (" - ", " – ", " — ", ": ", " | ", ", "):
            head = name.split(sep)[0].strip()
            if 0 < len(head) <= max_chars and len(head.split()) >= 2:
                return head
        name = " ".join(name[:max_chars].split()[:-1]) or name[:max_chars]
    return name


def clean_categories(categories: Sequence[str], domain: str) -> list[str]:
    """Categories without the top-level domain entry and generic levels, deduplicated."""
    out, seen = [], set()
    for cat in categories or ():
        cat = " ".join(str(cat).split())
        key = cat.casefold()
        if key in _GENERIC_CATEGORIES or key == domain.casefold() or key in seen:
            continue
        seen.add(key)
        out.append(cat)
    return out


def description_conditions(description: str, limit: int = 2) -> list[str]:
    """Short phrases ("online co-op") or, failing that, keywords from a description."""
    description = " ".join((description or "").split())
    if not description:
        return []
    phrases = []
    for m in _PHRASE_RE.finditer(description):
        phrase = m.group(1).strip(" ,-")
        if 0 < len(phrase.split()) <= _MAX_PHRASE_WORDS and phrase not in phrases:
            phrases.append(phrase)
    if phrases:
        return phrases[:limit]
    words = []
    for w in _WORD_RE.findall(description):
        norm = w.lower().strip("-'")
        if (
            len(norm) >= 5
            and norm not in leak.STOP_WORDS
            and norm not in leak.DOMAIN_WORDS
            and norm not in words
        ):
            words.append(norm)
    return words[:limit]


def _short_feature(feature: str) -> str | None:
    feature = " ".join(str(feature).split()).strip(" .;")
    if not feature or len(feature) > _MAX_FEATURE_CHARS:
        return None
    if len(feature.split()) > _MAX_FEATURE_WORDS:
        return None
    return feature


def item_conditions(item: Mapping[str, Any], domain: str, max_tags: int = 5) -> list[Condition]:
    """All conditions an item offers, in a canonical order (genre, decade, tag, ..., year).

    Args:
      item: the item dict.
      domain: "movies" | "video games" | "CDs" (used to drop the top-level category).
      max_tags: at most this many tags are used.

    Returns:
      A list of (field, value) without duplicates; tags that repeat a genre are dropped.
    """
    conds: list[Condition] = []
    genres = [str(g).strip() for g in item.get("genres") or () if str(g).strip()]
    genres = [g for g in genres if g.casefold() != _NO_GENRE]
    genre_keys = {g.casefold() for g in genres}
    conds += [("genre", g) for g in dict.fromkeys(genres)]
    year = item.get("year")
    if year is not None and str(year).strip().lstrip("-").isdigit():
        conds.append(("decade", decade_of(int(year))))
    seen_tags = set(genre_keys)
    tags = []
    for tag in item.get("tags") or ():
        tag = " ".join(str(tag).split())
        key = tag.casefold().rstrip("s")
        if not tag or tag.casefold() in seen_tags or key in seen_tags:
            continue
        seen_tags |= {tag.casefold(), key}
        tags.append(tag)
    conds += [("tag", t) for t in tags[:max_tags]]
    categories = clean_categories(item.get("categories") or (), domain)
    conds += [("category", c) for c in categories]
    known = {c.casefold() for c in categories} | genre_keys
    for feature in dict.fromkeys(_short_feature(f) for f in item.get("features") or ()):
        # "Platform: Xbox One" says nothing new when "Xbox One" is a category.
        if feature and feature.split(":", 1)[-1].strip().casefold() not in known:
            conds.append(("feature", feature))
    conds += [("description", p) for p in description_conditions(item.get("description") or "")]
    if year is not None and str(year).strip().lstrip("-").isdigit():
        conds.append(("year", str(int(year))))
    return conds


def safe_conditions(item: Mapping[str, Any], domain: str, max_tags: int = 5) -> list[Condition]:
    """`item_conditions` minus those whose value alone names the item (leak check)."""
    return [c for c in item_conditions(item, domain, max_tags) if not leak.find_leak(c[1], item)]
