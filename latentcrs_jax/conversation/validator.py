"""LatentCRS^V: a validator re-ranks the top N of LatentCRS^F's list; an LLM or a keyless stand-in.

The paper's third variant has an LLM check ^F's candidates against the dialogue and re-rank
them (the authors released none of it, docs/method.md 5). Here, every round:
1. ^F's order (the hard filter over the top `candidates`, shown items pushed back) gives the
   top N (`validator_candidates`, default 20);
2. the validator re-orders those N;
3. items already shown stay behind unshown ones (stable), as in ^F, and the first `top_k` are
   shown.

`LLMValidator` (`validator="llm"`) sends one user message to an OpenAI-compatible endpoint:
the dialogue as "role: text" lines and the N candidates numbered 1..N, each with its title,
year, genres or categories and a short text (tags, else the description's start), asking which
fit the request, best first, as JSON {"ranking": [numbers]}. The reply is read leniently
(`parse_ranking`): code fences and prose around the JSON, a bare list, numbers written as
strings ("3", "[3]", "#3", "3. Heat") or titles instead of numbers, dicts with "id"/"title".
Numbers outside 1..N and titles that are not among the candidates are dropped (counted as
unknown), repeats are dropped (counted), the unmentioned candidates follow the mentioned ones in
^F's order; an empty list keeps ^F's order (counted), and a reply without a list does too
(counted as unparsable; never an error). The client (`simulator/chat_client.py`) brings bounded
concurrency, timeouts, retries with backoff, the append-only cache and token counts; greedy
decoding by default.

`StandInValidator` (`validator="standin"`, the default, keyless and deterministic) is a
stand-in, not the paper's LLM validator: it scores candidate i at ^F position p_i (0-based) as
  w * (1 - p_i / (N - 1)) + (1 - w) * sim_i,
where the first term is the system's (^F's) rank score, sim_i is the cosine between the
embedded dialogue text and the item's text embedding, min-max scaled over the N candidates (0
when they are all equal), and w = `validator_standin_weight` (default 0.5); ties keep ^F's
order.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.conversation import llm_tracker
from latentcrs_jax.conversation.titles import title_key
from latentcrs_jax.conversation.tracker_reply import json_objects
from latentcrs_jax.simulator import attributes, phrases
from latentcrs_jax.simulator.chat_client import ChatClient
from latentcrs_jax.simulator.tokens import TokenUsage

KINDS = ("standin", "llm")
_MAX_WARNINGS = 10
_SHORT_TEXT_CHARS = 160

VALIDATOR_PROMPT = (
    "You are a conversational {item} recommendation assistant. A recommender system proposed "
    "the candidate {item}s below for the user in the conversation. Decide which candidates fit "
    "what the user asks for, and order those from the best fit to the worst. Leave out "
    "candidates that do not fit. Use the candidate numbers.\n\n"
    "Conversation:\n{conversation}\n"
    "Candidates:\n{candidates}\n"
    'Return only JSON: {{"ranking": [candidate numbers, best fit first]}}'
)
_RANKING_KEYS = ("ranking", "ranked", "order", "recommendations", "candidates", "ids", "fit")
_NUMBER_RE = re.compile(
    r"^\s*(?:candidate\s*)?[\[#(]?\s*(\d{1,4})\s*[\])]?\s*[.):-]?\s*(.*)$", re.I
)


class ValidatorReplyError(ValueError):
    """A validator reply holds no list of candidates."""


def short_text(item: Mapping[str, Any], max_chars: int = _SHORT_TEXT_CHARS) -> str:
    """A candidate's short text: its tags, else the start of its description."""
    tags = [str(t) for t in item.get("tags") or []]
    text = ("tags: " + ", ".join(tags[:5])) if tags else str(item.get("description") or "")
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 3].rstrip() + "..."


def candidate_line(number: int, item: Mapping[str, Any]) -> str:
    """ "[3] Heat (1995) | Action, Crime, Thriller | tags: heist" (parts only when known)."""
    name = attributes.display_title(str(item.get("title") or "")) or str(item.get("raw_id"))
    parts = [f"[{number}] {name}" + (f" ({item['year']})" if item.get("year") else "")]
    kinds = list(item.get("genres") or []) or list(item.get("categories") or [])[-3:]
    if kinds:
        parts.append(", ".join(str(k) for k in kinds))
    text = short_text(item)
    if text:
        parts.append(text)
    return " | ".join(parts)


def validator_prompt(
    domain: str, turns: Sequence[Mapping[str, Any]], candidates: Sequence[Mapping[str, Any]]
) -> str:
    """The single user message of one validation request (candidates in ^F's order)."""
    lines = "".join(candidate_line(n, it) + "\n" for n, it in enumerate(candidates, 1))
    return VALIDATOR_PROMPT.format(
        item=llm_tracker.item_noun(domain),
        conversation=llm_tracker.dialogue_lines(turns),
        candidates=lines,
    )


# ---------------------------------------------------------------------------------- parsing
def bare_list(text: str) -> list | None:
    """The first JSON list in `text`, else the Python literal from the first "[" to the last "]"."""
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch == "[":
            try:
                value, _ = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                return value
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            value = ast.literal_eval(text[start : end + 1])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        return value if isinstance(value, list) else None
    return None


def find_list(text: str, keys: Sequence[str]) -> list | None:
    """The list a reply gives: under one of `keys` in a JSON object, else a bare list, else the
    first list value of an object (None when there is none)."""
    objects = list(json_objects(text))
    for obj in objects:
        found = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in obj.items()}
        for k in keys:
            if isinstance(found.get(k), list):
                return found[k]
    value = bare_list(text)
    if value is not None:
        return value
    return next((v for obj in objects for v in obj.values() if isinstance(v, list)), None)


@dataclasses.dataclass
class ParsedRanking:
    """Positions (0-based, into the candidate list) the reply names, in its order."""

    positions: list[int]
    unknown: list[str]
    duplicates: int


def parse_ranking(reply: str, candidates: Sequence[Mapping[str, Any]]) -> ParsedRanking:
    """Reads a validator reply against its N candidates.

    Args:
      reply: the model's reply.
      candidates: the candidate items in the order they were numbered (1..N).

    Returns:
      The named positions (unknown names and repeats dropped, and counted).

    Raises:
      ValidatorReplyError: no list in the reply.
    """
    text = str(reply or "")
    found = find_list(text, _RANKING_KEYS)
    if found is None:
        raise ValidatorReplyError("no JSON list in the reply" if text.strip() else "empty reply")
    by_title: dict[str, int] = {}
    for pos, item in enumerate(candidates):
        title = str(item.get("title") or "")
        for name in (title, f"{title} {item.get('year') or ''}"):
            by_title.setdefault(title_key(name), pos)
    n = len(candidates)
    positions: list[int] = []
    unknown: list[str] = []
    duplicates = 0
    for entry in found:
        pos = _position(entry, n, by_title)
        if pos is None:
            unknown.append(str(entry)[:80])
        elif pos in positions:
            duplicates += 1
        else:
            positions.append(pos)
    return ParsedRanking(positions, unknown, duplicates)


def _position(entry: Any, n: int, by_title: Mapping[str, int]) -> int | None:
    if isinstance(entry, bool) or entry is None:
        return None
    if isinstance(entry, Mapping):
        keys = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in entry.items()}
        for k in ("id", "number", "candidate", "index", "rank", "title", "name"):
            if k in keys:
                return _position(keys[k], n, by_title)
        return None
    if isinstance(entry, int | float):
        return int(entry) - 1 if float(entry).is_integer() and 1 <= entry <= n else None
    text = " ".join(str(entry).split())
    m = _NUMBER_RE.match(text)
    if m and 1 <= int(m.group(1)) <= n:
        return int(m.group(1)) - 1
    for name in (text, m.group(2) if m else ""):
        key = title_key(name)
        if key in by_title:
            return by_title[key]
        stripped = title_key(re.sub(r"\s*\(\s*\d{4}\s*\)\s*$", "", name))
        if stripped in by_title:
            return by_title[stripped]
    return None


def reorder(order: Sequence[int], positions: Sequence[int]) -> list[int]:
    """The named positions' items first (in the reply's order), then the rest in `order`."""
    first = [order[p] for p in positions]
    return first + [i for p, i in enumerate(order) if p not in set(positions)]


def shown_last(order: Sequence[int], shown: Sequence[int]) -> list[int]:
    """A stable sort that puts the items already shown behind the others."""
    seen = set(shown)
    return sorted(order, key=lambda i: int(i in seen))


# ------------------------------------------------------------------------------- validators
@dataclasses.dataclass
class RerankResult:
    """One validation.

    Attributes:
      order: the candidates' item ids, re-ranked.
      status: "parsed" | "empty" | "unparsable" (an LLM reply), "skipped" (fewer than two
        candidates: no call) or "standin".
      unknown: names in the reply that are not among the candidates (dropped).
      duplicates: repeated names (dropped).
      usage: the tokens of the call (zero for the stand-in).
    """

    order: list[int]
    status: str
    unknown: list[str] = dataclasses.field(default_factory=list)
    duplicates: int = 0
    usage: TokenUsage = TokenUsage()


class LLMValidator:
    """The paper's LLM validator on an OpenAI-compatible endpoint.

    Args:
      items: the items table (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      client: a configured `ChatClient`.
    """

    kind = "llm"

    def __init__(self, items: Sequence[Mapping[str, Any]], domain: str, client: ChatClient):
        self.items = items
        self.domain = phrases.get_domain(domain).name
        self.client = client
        self.stats: collections.Counter[str] = collections.Counter()

    @property
    def label(self) -> str:
        return f"LLM validator ({self.client.config.model})"

    def messages(
        self, turns: Sequence[Mapping[str, Any]], candidates: Sequence[int]
    ) -> list[dict[str, str]]:
        """[user: the validation prompt]."""
        items = [self.items[i] for i in candidates]
        return [{"role": "user", "content": validator_prompt(self.domain, turns, items)}]

    def interpret(self, reply: str, candidates: Sequence[int]) -> RerankResult:
        """The re-ranked candidates of one reply (^F's order when it does not parse)."""
        order = [int(i) for i in candidates]
        self.stats["calls"] += 1
        try:
            parsed = parse_ranking(reply, [self.items[i] for i in order])
        except ValidatorReplyError as e:
            n = self.stats["unparsable"]
            self.stats["unparsable"] += 1
            if n < _MAX_WARNINGS:
                logging.warning("validator: %s; ^F's order is kept: %r", e, str(reply)[:300])
            return RerankResult(order, "unparsable")
        self.stats["unknown"] += len(parsed.unknown)
        self.stats["duplicates"] += parsed.duplicates
        if not parsed.positions:
            self.stats["empty"] += 1
            return RerankResult(order, "empty", parsed.unknown, parsed.duplicates)
        self.stats["parsed"] += 1
        return RerankResult(
            reorder(order, parsed.positions), "parsed", parsed.unknown, parsed.duplicates
        )

    def rerank_many(
        self,
        turns: Sequence[Sequence[Mapping[str, Any]]],
        candidates: Sequence[Sequence[int]],
        texts: Sequence[str] = (),
    ) -> list[RerankResult]:
        """Validates a batch (identical requests sent once, concurrently), in order.

        Args:
          turns: per dialogue, its turns so far ({"role", "text"} dicts).
          candidates: per dialogue, ^F's top N item ids.
          texts: unused (the stand-in's dialogue texts).

        Raises:
          EndpointError: the endpoint failed after every retry.
        """
        del texts
        out = [RerankResult([int(i) for i in c], "skipped") for c in candidates]
        asked = [k for k, c in enumerate(candidates) if len(c) >= 2]  # Nothing to re-order else.
        batch = [self.messages(turns[k], candidates[k]) for k in asked]
        replies = self.client.complete_many(batch)
        for k, reply, messages in zip(asked, replies, batch):
            out[k] = self.interpret(reply, candidates[k])
            out[k].usage = self.client.usage_for(messages)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts: calls, parsed, empty and unparsable replies, unknown and repeated names."""
        keys = ("calls", "parsed", "empty", "unparsable", "unknown", "duplicates")
        out: dict[str, Any] = {k: self.stats[k] for k in keys}
        out["requests"] = self.client.requests_made
        out["cache_hits"] = self.client.cache_hits
        return out


class StandInValidator:
    """The keyless, deterministic stand-in for the LLM validator (see the module docstring).

    Args:
      embed: texts -> float32[B, D] L2-normalised embeddings (the recommender's encoder).
      item_text_emb: float32[N+1, D] L2-normalised item-text embeddings.
      weight: w, the weight of ^F's rank score (1 - w: the text similarity).
    """

    kind = "standin"
    label = "stand-in validator (no LLM)"

    def __init__(
        self,
        embed: Callable[[Sequence[str]], np.ndarray],
        item_text_emb: np.ndarray,
        weight: float = 0.5,
    ):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"stand-in weight must be in [0, 1], got {weight}")
        self.embed = embed
        self.item_text_emb = np.asarray(item_text_emb, np.float32)
        self.weight = float(weight)
        self.stats: collections.Counter[str] = collections.Counter()

    def scores(self, text_emb: np.ndarray, candidates: Sequence[int]) -> np.ndarray:
        """float64[N] stand-in scores of the candidates (in ^F's order) for one dialogue."""
        n = len(candidates)
        if n == 0:
            return np.zeros(0)
        rank = 1.0 - np.arange(n) / (n - 1) if n > 1 else np.ones(1)
        sim = self.item_text_emb[np.asarray(candidates)] @ np.asarray(text_emb, np.float32)
        sim = sim.astype(np.float64)
        span = sim.max() - sim.min()
        sim = (sim - sim.min()) / span if span > 0 else np.zeros(n)
        return self.weight * rank + (1.0 - self.weight) * sim

    def rerank_many(
        self,
        turns: Sequence[Sequence[Mapping[str, Any]]],
        candidates: Sequence[Sequence[int]],
        texts: Sequence[str] = (),
    ) -> list[RerankResult]:
        """Re-ranks each dialogue's candidates by the stand-in score (`texts`: ranking texts)."""
        del turns
        if len(texts) != len(candidates):
            raise ValueError(f"{len(texts)} texts for {len(candidates)} candidate lists")
        if not candidates:
            return []
        emb = np.asarray(self.embed(list(texts)))
        out = []
        for row, cands in zip(emb, candidates):
            order = [int(i) for i in cands]
            s = self.scores(row, order)
            ranked = sorted(range(len(order)), key=lambda p: (-s[p], p))
            out.append(RerankResult([order[p] for p in ranked], "standin"))
        self.stats["calls"] += len(candidates)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts: re-rankings made (no LLM call)."""
        return {"calls": self.stats["calls"], "llm_calls": 0, "weight": self.weight}
