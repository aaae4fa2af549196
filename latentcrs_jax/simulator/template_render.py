"""Phrasing of the template simulator: the slots, clauses and first-turn sentences built from
the banks in `phrases.py`, the per-sample random generator, and the leak check every composed
utterance goes through (`template.py` decides what to say, this module how to say it).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax.simulator import leak, phrases
from latentcrs_jax.simulator.attributes import Condition

Item = Mapping[str, Any]

_GENRE_WORD = {
    "animation": "animated",
    "children": "children's",
    "children's": "children's",
    "imax": "IMAX",
    "film-noir": "film-noir",
}
_DECADE_WORDS = {
    1920: "twenties",
    1930: "thirties",
    1940: "forties",
    1950: "fifties",
    1960: "sixties",
    1970: "seventies",
    1980: "eighties",
    1990: "nineties",
}
_KV_RE = re.compile(r"^([^:]{1,30}):\s*(.+)$")


def leaks(text: str, target_item: Item, conds: Sequence[Condition] = ()) -> str | None:
    """The template simulator's strict leak check (stated condition values allowed)."""
    return leak.find_leak(text, target_item, strict=True, allow=[v for _, v in conds])


def sample_rng(seed: int, *parts: Any) -> random.Random:
    """A `random.Random` seeded by a SHA-256 of (seed, *parts): order-independent."""
    key = "\x1f".join(str(p) for p in (seed, *parts)).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def lower_first(s: str) -> str:
    if re.match(r"I\b", s) or s[1:2].isupper():  # "I'm", "IMAX".
        return s
    return s[:1].lower() + s[1:]


def _article(phrase: str) -> str:
    w = phrase.lstrip("\"'").lower()
    if w[:1] in "aeio" or (w[:1] == "u" and not w.startswith(("uni", "use", "usu", "ut"))):
        return "an"
    if w[:1] == "8" or (w.startswith(("11", "18")) and not w.startswith(("110", "180"))):
        return "an"
    return "a"


def _genre_word(genre: str, clause: bool = False) -> str:
    key = genre.casefold()
    if clause and key == "animation":
        return "animation"
    return _GENRE_WORD.get(key, key)


def _join(words: Sequence[str], rng: random.Random) -> str:
    if len(words) <= 1:
        return "".join(words)
    last = rng.choice((" and ", " and ", " or ")) if len(words) == 2 else " and "
    return ", ".join(words[:-1]) + last + words[-1]


def _decade_form(value: str, rng: random.Random) -> str:
    forms = [value]
    start = int(value[:-1])
    if start in _DECADE_WORDS:
        short = str(start)[2:] + "s"
        forms += [short, "'" + short, _DECADE_WORDS[start]]
    return rng.choice(forms)


def _quote(tags: Sequence[str]) -> list[str]:
    return [f'"{t}"' for t in tags]


def _slots(field: str, values: Sequence[str], rng: random.Random) -> dict[str, str]:
    """Placeholder values for one condition group."""
    if field == "genre":
        g = _join([_genre_word(v, clause=True) for v in values], rng)
        return {"g": g, "G": cap(g)}
    if field == "decade":
        return {"d": _decade_form(values[0], rng)}
    if field == "year":
        return {"y": values[0]}
    if field == "tag":
        return {"t": _join(_quote(values), rng)}
    if field == "category":
        return {"c": values[0]}
    if field == "feature":
        m = _KV_RE.match(values[0])
        if m:
            k, v = m.group(1).strip().lower(), m.group(2).strip()
            return {"k": k, "K": cap(k), "v": v}
        return {"f": values[0]}
    if field == "description":
        return {"p": values[0], "P": cap(values[0])}
    raise ValueError(f"unknown condition field {field!r}")


def _clause_bank(field: str, slots: Mapping[str, str]) -> Sequence[str]:
    if field == "feature":
        return phrases.KV_FEATURE_CLAUSES if "k" in slots else phrases.FEATURE_CLAUSES
    return {
        "genre": phrases.GENRE_CLAUSES,
        "decade": phrases.DECADE_CLAUSES,
        "year": phrases.YEAR_CLAUSES,
        "tag": phrases.TAG_CLAUSES,
        "category": phrases.CATEGORY_CLAUSES,
        "description": phrases.DESCRIPTION_CLAUSES,
    }[field]


def _post_bank(field: str, slots: Mapping[str, str]) -> Sequence[str]:
    if field == "feature":
        return phrases.KV_FEATURE_POST if "k" in slots else phrases.FEATURE_POST
    return {
        "decade": phrases.DECADE_POST,
        "year": phrases.YEAR_POST,
        "tag": phrases.TAG_POST,
        "category": phrases.CATEGORY_POST,
        "description": phrases.DESCRIPTION_POST,
    }[field]


def _groups(conds: Sequence[Condition]) -> list[tuple[str, list[str]]]:
    """Groups genres together and tags together; other conditions stay one per group."""
    groups: list[tuple[str, list[str]]] = []
    for field, value in conds:
        if field in ("genre", "tag"):
            for g in groups:
                if g[0] == field:
                    g[1].append(value)
                    break
            else:
                groups.append((field, [value]))
        else:
            groups.append((field, [value]))
    return groups


def render_clause(field: str, values: Sequence[str], rng: random.Random) -> tuple[str, bool]:
    """One sentence stating a condition group; also whether it starts with a slot value."""
    slots = _slots(field, values, rng)
    template = rng.choice(_clause_bank(field, slots))
    # {G}, {K}, {P} are capitalised lower-case words, so they may be lowered again.
    starts_with_value = template.startswith("{") and not template.startswith(("{G}", "{K}", "{P}"))
    return template.format(**slots), starts_with_value


def _noun_phrase(conds: Sequence[Condition], dom: phrases.Domain, rng: random.Random) -> str:
    """E.g. "a sci-fi thriller movie from the 90s tagged "twist ending"."."""
    pre, posts = "", []
    for field, values in _groups(conds):
        if field == "genre":
            words = [_genre_word(v) for v in values]
            pre = (
                rng.choice((" ".join(words), _join(words, rng)))
                if len(words) == 2
                else (_join(words, rng))
            )
        else:
            slots = _slots(field, values, rng)
            posts.append(rng.choice(_post_bank(field, slots)).format(**slots))
    head = f"{pre} {rng.choice(dom.nouns)}" if pre else rng.choice(dom.nouns)
    np = f"{_article(head)} {head}"
    if posts:
        sep = rng.choice((", ", " and ")) if len(posts) == 2 else ", "
        np += " " + (", ".join(posts[:-1]) + sep + posts[-1] if len(posts) > 1 else posts[0])
    return np


def _domain_slots(dom: phrases.Domain, rng: random.Random) -> dict[str, str]:
    noun = rng.choice(dom.nouns)
    return {
        "noun": noun,
        "a_noun": f"{_article(noun)} {noun}",
        "plural": dom.plural,
        "verb": dom.verb,
        "ing": dom.ing,
        "past": rng.choice(dom.past),
    }


def render_first_turn(
    conds: Sequence[Condition],
    history_title: str | None,
    dom: phrases.Domain,
    rng: random.Random,
) -> str:
    """Composes one first-turn utterance (no leak check here)."""
    ds = _domain_slots(dom, rng)
    parts = []
    if rng.random() < 0.45:
        parts.append(rng.choice(phrases.OPENERS))
    hist = None
    if history_title:
        title = f'"{history_title}"' if rng.random() < 0.3 else history_title
        hist = cap(rng.choice(phrases.HISTORY_CLAUSES).format(h=title, **ds))
    hist_first = hist is not None and rng.random() < 0.4
    if hist_first:
        parts.append(hist)
    if conds and rng.random() < 0.5:
        parts.append(
            cap(rng.choice(phrases.NP_REQUESTS).format(np=_noun_phrase(conds, dom, rng), **ds))
        )
    else:
        parts.append(cap(rng.choice(phrases.BASE_REQUESTS).format(**ds)))
        groups = _groups(conds)
        head, rest = groups[:1], groups[1:]
        rng.shuffle(rest)
        for field, values in head + rest:
            parts.append(cap(render_clause(field, values, rng)[0]))
    if hist is not None and not hist_first:
        parts.append(hist)
    if rng.random() < 0.5:
        parts.append(rng.choice(phrases.CLOSERS))
    return " ".join(parts)
