"""The zero-shot LLM-only recommender baseline (iEvaLM's "LLM alone" row) on a chat endpoint.

Each round the endpoint gets one user message: it is a conversational {item} recommender; here
is the dialogue so far as "role: text" lines (the recommender's turns, with the titles it
showed, as "assistant"); recommend `n` {item}s, best first, none already recommended, as JSON
{"titles": ["Title (Year)", ...]}. The reply is read leniently (`parse_titles`): a JSON object
with a list under "titles" (or "recommendations", "items", "movies", ...), a bare JSON list,
dicts with a "title" (and "year"), else numbered or bulleted lines. Each title is resolved onto
the catalogue with the chat's fuzzy matcher (`titles.TitleIndex`: exact, then the title without
its year, then a confident fuzzy match); an ambiguous or unknown title is a miss, counted and
reported with examples. Nothing is ranked by the trained models: the catalogue only maps names.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from absl import logging

from latentcrs_jax.conversation import llm_tracker
from latentcrs_jax.conversation.titles import TitleIndex
from latentcrs_jax.conversation.validator import find_list
from latentcrs_jax.simulator import phrases
from latentcrs_jax.simulator.chat_client import ChatClient
from latentcrs_jax.simulator.tokens import TokenUsage

_MAX_WARNINGS = 10
_TITLE_KEYS = ("titles", "recommendations", "recommended", "items", "movies", "games", "cds")
_LINE_RE = re.compile(r"^\s*(?:\d{1,3}\s*[.):-]|[-*•])\s*(.+?)\s*$")

LLM_ONLY_PROMPT = (
    "You are a conversational {item} recommender. Read the conversation below and recommend "
    "{n} {item}s the user will like, best first. Do not repeat {item}s already recommended in "
    "the conversation. Give each title with its year.\n\n"
    "Conversation:\n{conversation}\n"
    'Return only JSON: {{"titles": ["Title (Year)", ...]}}'
)


class TitlesReplyError(ValueError):
    """A reply of the LLM-only recommender holds no titles."""


def llm_only_prompt(domain: str, turns: Sequence[Mapping[str, Any]], n: int) -> str:
    """The single user message of one LLM-only request."""
    return LLM_ONLY_PROMPT.format(
        item=llm_tracker.item_noun(domain), n=n, conversation=llm_tracker.dialogue_lines(turns)
    )


def _entry_title(entry: Any) -> str:
    if isinstance(entry, Mapping):
        keys = {re.sub(r"[^a-z]", "", str(k).lower()): v for k, v in entry.items()}
        title = str(keys.get("title") or keys.get("name") or "").strip()
        year = keys.get("year")
        return f"{title} ({year})" if title and year else title
    if isinstance(entry, str):
        return " ".join(entry.split())
    return ""


def parse_titles(reply: str) -> list[str]:
    """The titles a reply names, in order (empty strings dropped).

    Raises:
      TitlesReplyError: no JSON list and no numbered or bulleted lines.
    """
    text = str(reply or "")
    found = find_list(text, _TITLE_KEYS)
    if found is not None:
        return [t for t in map(_entry_title, found) if t]
    lines = [m.group(1).strip("\"'* ") for m in map(_LINE_RE.match, text.splitlines()) if m]
    if lines:
        return [t for t in lines if t]
    raise TitlesReplyError("no JSON list and no list lines" if text.strip() else "empty reply")


@dataclasses.dataclass
class LLMRecResult:
    """One LLM-only recommendation.

    Attributes:
      items: resolved item ids, in the reply's order, without repeats.
      titles: the titles the reply named.
      unresolved: titles that did not resolve onto the catalogue (misses).
      status: "parsed" | "unparsable".
      usage: the tokens of the call.
    """

    items: list[int]
    titles: list[str]
    unresolved: list[str]
    status: str
    usage: TokenUsage = TokenUsage()


class LLMRecommender:
    """Zero-shot recommendations from a chat model, resolved onto the catalogue.

    Args:
      items: the items table (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      client: a configured `ChatClient`.
      num_titles: titles asked for per request.
      index: the title matcher (built from `items` when None).
    """

    kind = "llm"

    def __init__(
        self,
        items: Sequence[Mapping[str, Any]],
        domain: str,
        client: ChatClient,
        num_titles: int = 10,
        index: TitleIndex | None = None,
    ):
        if num_titles < 1:
            raise ValueError(f"num_titles must be >= 1, got {num_titles}")
        self.items = items
        self.domain = phrases.get_domain(domain).name
        self.client = client
        self.num_titles = int(num_titles)
        self.index = index if index is not None else TitleIndex(items)
        self.stats: collections.Counter[str] = collections.Counter()
        self.misses: collections.Counter[str] = collections.Counter()

    def messages(self, turns: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
        """[user: the LLM-only prompt with the dialogue]."""
        prompt = llm_only_prompt(self.domain, turns, self.num_titles)
        return [{"role": "user", "content": prompt}]

    def interpret(self, reply: str) -> LLMRecResult:
        """The items one reply names (resolved titles, misses counted)."""
        self.stats["calls"] += 1
        try:
            titles = parse_titles(reply)
        except TitlesReplyError as e:
            n = self.stats["unparsable"]
            self.stats["unparsable"] += 1
            if n < _MAX_WARNINGS:
                logging.warning("LLM-only recommender: %s: %r", e, str(reply)[:300])
            return LLMRecResult([], [], [], "unparsable")
        found: list[int] = []
        unresolved: list[str] = []
        for title in titles:
            match = self.index.lookup(title[:200])
            self.stats["titles"] += 1
            if match.item is None:
                unresolved.append(title)
                self.stats["unresolved"] += 1
                self.misses[title.casefold()] += 1
                continue
            self.stats[f"resolved_{match.status}"] += 1
            if match.item not in found:
                found.append(match.item)
        self.stats["parsed"] += 1
        return LLMRecResult(found, titles, unresolved, "parsed")

    def recommend_many(self, turns: Sequence[Sequence[Mapping[str, Any]]]) -> list[LLMRecResult]:
        """Recommendations for a batch of dialogues (identical ones sent once), in order.

        Raises:
          EndpointError: the endpoint failed after every retry.
        """
        batch = [self.messages(t) for t in turns]
        replies = self.client.complete_many(batch)
        out = []
        for reply, messages in zip(replies, batch):
            result = self.interpret(reply)
            result.usage = self.client.usage_for(messages)
            out.append(result)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts: calls, titles returned, resolved (exact / fuzzy), misses with examples."""
        keys = ("calls", "parsed", "unparsable", "titles", "resolved_exact", "resolved_fuzzy")
        out: dict[str, Any] = {k: self.stats[k] for k in keys}
        out["unresolved"] = self.stats["unresolved"]
        out["unresolved_rate"] = (
            self.stats["unresolved"] / self.stats["titles"] if self.stats["titles"] else 0.0
        )
        out["top_unresolved"] = [t for t, _ in self.misses.most_common(10)]
        out["requests"] = self.client.requests_made
        out["cache_hits"] = self.client.cache_hits
        return out


def choose_shown(
    found: Sequence[int], top_k: int, shown: Collection[int], history: Collection[int] = ()
) -> list[int]:
    """The items shown this round: `found` without `history`, unshown ones first, `top_k`."""
    seen = set(shown)
    pool = [i for i in dict.fromkeys(found) if i not in set(history)]
    pool.sort(key=lambda i: int(i in seen))  # Stable: the reply's order, unshown first.
    return pool[:top_k]
