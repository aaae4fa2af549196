"""Reading an LLM state tracker's reply: lenient JSON parsing and mapping onto the vocabulary.

`parse_reply` finds the JSON object of a reply (code fences and prose around it, Python-style
quotes and trailing commas, key spellings such as "item_features", a string instead of a list,
nested lists and dicts) and returns its lists; `FeatureMapper` maps each returned feature name
onto a `FeatureVocab` (see `llm_tracker.py` for how the tracker uses both).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from latentcrs_jax.conversation.features import Feature, FeatureVocab, normalise, tokens

_FIELD_ORDER = ("genre", "category", "decade", "year", "tag")  # Mapping priority.

_INTENT_KEYS = frozenset(["humanintents", "humanintent", "intents", "intent"])
_FEATURE_KEYS = frozenset(["itemfeatures", "itemfeature", "features", "feature"])
_EXCLUDED_KEYS = frozenset(
    ["excludedfeatures", "excludedfeature", "excludeditemfeatures", "excluded", "exclusions"]
)
_FENCE_RE = re.compile(r"```[a-zA-Z]*\s*(.*?)```", re.DOTALL)
_LIST_SPLIT_RE = re.compile(r"\s*[,;\n|]\s*")
# Words a feature phrase may carry besides the feature itself ("90s movies", "genre: Comedy").
_FILLER = frozenset(
    tokens(
        "a an the and or of from in with set era genre genres style type kind movie movies film "
        "films game games video music album albums cd cds"
    )
)


class ReplyParseError(ValueError):
    """A tracker reply holds no usable JSON object."""


# ---------------------------------------------------------------------------------- parsing
@dataclasses.dataclass
class ParsedReply:
    """The lists of one tracker reply (strings as the model wrote them)."""

    intents: list[str]
    features: list[str]
    excluded: list[str]


def _key(name: Any) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def as_strings(value: Any, split: bool) -> list[str]:
    """The non-empty strings in a JSON value, flattened.

    Args:
      value: None, a string, a number, or a (nested) list / dict of them.
      split: split strings on ",", ";", "|" and new lines (feature lists written as one
        string); intents are kept whole.

    Returns:
      Stripped strings in order (dict values; booleans and None dropped).
    """
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str):
        parts = _LIST_SPLIT_RE.split(value) if split else [value]
        return [" ".join(p.split()).strip(" .\"'") for p in parts if p.strip(" .\"'")]
    if isinstance(value, int | float):
        return [str(int(value)) if float(value).is_integer() else str(value)]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple | set):
        return [s for v in value for s in as_strings(v, split)]
    return as_strings(str(value), split)


def json_objects(text: str):
    """Dicts found in `text`: inside code fences first, then anywhere, JSON then Python-style."""
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for cand in candidates:
        for i, ch in enumerate(cand):
            if ch != "{":
                continue
            try:
                obj, _ = decoder.raw_decode(cand, i)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                yield obj
    for cand in candidates:  # Single quotes, trailing commas: a Python literal.
        start, end = cand.find("{"), cand.rfind("}")
        if 0 <= start < end:
            try:
                obj = ast.literal_eval(cand[start : end + 1])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(obj, dict):
                yield obj


def parse_reply(text: str) -> ParsedReply:
    """The lists of a tracker reply.

    Args:
      text: the model's reply (JSON, possibly fenced or with prose around it).

    Returns:
      The intents, item features and excluded features ("human intents" may be missing).

    Raises:
      ReplyParseError: no JSON object with an "item features" key.
    """
    text = str(text or "")
    if not text.strip():
        raise ReplyParseError("empty reply")
    found_object = False
    for obj in json_objects(text):
        found_object = True
        keys = {_key(k): v for k, v in obj.items()}
        feature_key = next((k for k in keys if k in _FEATURE_KEYS), None)
        if feature_key is None:
            continue
        intent_key = next((k for k in keys if k in _INTENT_KEYS), None)
        excluded_key = next((k for k in keys if k in _EXCLUDED_KEYS), None)
        return ParsedReply(
            intents=as_strings(keys.get(intent_key), split=False),
            features=as_strings(keys[feature_key], split=True),
            excluded=as_strings(keys.get(excluded_key), split=True),
        )
    if found_object:
        raise ReplyParseError('no "item features" key in the JSON reply')
    raise ReplyParseError("no JSON object in the reply")


# ---------------------------------------------------------------------------------- mapping
class FeatureMapper:
    """Maps feature names written by a model onto a `FeatureVocab`.

    Order of tries: the data's spelling; the same case-insensitively; the normalised form
    (accents, case, plurals, hyphens, "&"; genre aliases such as "science fiction"); a phrase
    the rule matcher reads whole, every other word a filler ("90s movies", "the nineties",
    "no horror", which maps as an excluded feature). Fields are tried in the order genre,
    category, decade, year, tag.
    """

    def __init__(self, vocab: FeatureVocab):
        self.vocab = vocab
        self._exact: dict[str, Feature] = {}
        self._folded: dict[str, Feature] = {}
        self._normal: dict[str, Feature] = {}
        rank = {f: i for i, f in enumerate(_FIELD_ORDER)}
        for f in sorted(vocab.features(), key=lambda f: (rank.get(f[0], len(rank)), f)):
            label = vocab.label(f)
            self._exact.setdefault(label.strip(), f)
            self._folded.setdefault(label.strip().casefold(), f)
            self._normal.setdefault(normalise(label), f)

    def map(self, name: str) -> tuple[list[Feature], bool]:
        """(features, negated) of one name; ([], False) when it is not in the vocabulary."""
        name = " ".join(str(name).split())
        for table, key in (
            (self._exact, name),
            (self._folded, name.casefold()),
            (self._normal, normalise(name)),
        ):
            if key and key in table:
                return [table[key]], False
        for field in _FIELD_ORDER:
            f = self.vocab.feature_of(field, name)
            if f is not None:
                return [f], False
        matches = self.vocab.match(name)
        if not matches:
            return [], False
        covered = {i for m in matches for i in range(m.start, m.end)}
        toks = tokens(name)
        negated = {m.negated for m in matches}
        rest = [t for i, t in enumerate(toks) if i not in covered and t != "|"]
        neg_words = {"no", "not", "without", "never", "except", "excluding", "dont", "avoid"}
        if len(negated) == 1 and all(t in _FILLER or t in neg_words for t in rest):
            return list(dict.fromkeys(m.feature for m in matches)), negated.pop()
        return [], False
