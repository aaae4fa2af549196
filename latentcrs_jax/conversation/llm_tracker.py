"""The optional LLM dialogue-state tracker (docs/method.md 5, step 1) on a chat endpoint.

Each round, the tracker sends the paper's state-tracking prompt as one user message: it is a
conversational {item} recommendation assistant; the user gives hard descriptions (mandatory
features) and soft descriptions (preferences); here are the candidate item features; here is
the whole dialogue as "role: text" lines (the recommender's turns as "assistant"); answer only
JSON {"human intents": [...], "item features": [...]}, listing only features the user
explicitly mentioned. One addition to the paper's prompt, on by default
(`tracker_excluded_features`): an "excluded features" list, so "no horror" still removes
horror items as the rule tracker does; off, the prompt asks for the paper's two keys only.

The candidate features listed are the dataset's genres, categories and decades (most frequent
first within a field, at most `max_prompt_features`); the paper lists the 18 MovieLens genres
and short, "abbreviated" lists for CDs and games. Years and tags are not listed (too many), but
a returned year or tag still maps.

Replies are parsed leniently (`parse_reply`): code fences and prose around the JSON object,
Python-style quotes and trailing commas, key spellings such as "item_features", a string
instead of a list ("Comedy, Drama" is split on commas), nested lists and dicts (flattened).
A reply with no JSON object or no "item features" key is unparsable: a warning is logged and
that turn falls back to the rule tracker (`FeatureVocab.stated` on the newest user turn,
folded into the state), so a multi-turn run never stops on a bad reply.

Each returned feature name is mapped onto the vocabulary (`FeatureMapper`): the data's
spelling, case-insensitive, then the normalised form (plurals, hyphens, "&"; genre aliases),
then a phrase the rule matcher reads whole ("90s", "nineties", "no horror" = excluded).
Unmapped names are dropped and counted. A parsed reply replaces the state's feature lists (the
model reads the whole dialogue every round, as the authors' code does), and its intents are
kept for `ranking_text="intents"`. The client (`simulator/chat_client.py`) brings bounded
concurrency, timeouts, retries with backoff and the append-only response cache, so a re-run
repeats no call.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from latentcrs_jax.conversation.features import (
    Feature,
    FeatureVocab,
    StatedFeatures,
)
from latentcrs_jax.conversation.state import ConversationState
from latentcrs_jax.conversation.tracker_reply import FeatureMapper, ReplyParseError, parse_reply
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.simulator import phrases
from latentcrs_jax.simulator.chat_client import (
    ChatClient,
    ChatConfig,
    EndpointConfigError,
    EndpointError,
    MissingApiKeyError,
)
from latentcrs_jax.simulator.tokens import TokenUsage

KINDS = ("rules", "llm")
PROMPT_FIELDS = ("genre", "category", "decade")  # Fields listed as candidate features.
_ITEM_NOUNS = {"movies": "movie", "video games": "video game", "CDs": "CD"}
_MAX_WARNINGS = 10  # Unparsable replies logged one by one; later ones are only counted.

TRACKER_PROMPT = (
    "You are a conversational {item} recommendation assistant, helping a user find the "
    "{item}s that meet their requirements. In each turn of the conversation the user may "
    "share two kinds of information: 1. Hard descriptions: mandatory requirements that the "
    "{item} must fulfill, such as key features. 2. Soft descriptions: further preferences "
    "that are not strictly required.\n\n"
    "The candidate item features are: {features}.\n\n"
    "Read the whole conversation history and identify the user's mandatory requirements "
    "among the listed item features, and the user's broader preferences about the {item}.\n\n"
    'Summarize them in the JSON format below. Use "item features" for the hard descriptions '
    'that appear in the conversation and "human intents" for soft descriptions or general '
    "preferences.{excluded_rule} Only list features the user explicitly mentioned, and only "
    "when you are highly confident they are accurate. Return only the JSON.\n"
    "{schema}\n"
    "conversation_history: {conversation}"
)
EXCLUDED_RULE = (
    ' Use "excluded features" for listed item features the user explicitly rules out (for '
    'example "no horror").'
)
SCHEMA = '{{\n  "human intents": [{intents}],\n  "item features": [{features}]{excluded}\n}}'


class TrackerConfigError(UserInputError, ValueError):
    """A bad state-tracker setting (`config.multi_turn.state_tracker` and `tracker_*`)."""


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
    """Settings of the state tracker (`config.multi_turn.state_tracker`, `tracker_*`).

    Raises:
      TrackerConfigError: an unknown kind, or "llm" without an endpoint URL or model name.
    """

    kind: str = "rules"  # "rules" (FeatureVocab, keyless) | "llm" (OpenAI-compatible chat).
    base_url: str = ""  # Chat endpoint base URL, e.g. "http://127.0.0.1:8000/v1".
    model: str = ""  # Model name sent to the endpoint.
    api_key_env: str = "OPENAI_API_KEY"  # Env var with the key; "" or a local URL: no key.
    temperature: float = 0.0  # 0 = greedy, as the authors' generate().
    max_tokens: int = 512  # Reply length limit.
    timeout_s: float = 60.0  # Per-request timeout.
    max_retries: int = 5  # Retries with exponential backoff (connection errors, 429, 5xx).
    max_concurrency: int = 4  # At most this many requests in flight.
    max_prompt_features: int = 200  # Candidate features listed in the prompt.
    excluded_features: bool = True  # Also ask for "excluded features" (False: paper's 2 keys).
    tokenizer: str = ""  # Local tokenizer dir for token counts without `usage`; "" = estimate.

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TrackerConfigError(
                f"multi_turn.state_tracker must be one of {KINDS}, got {self.kind!r}"
            )
        if self.kind == "llm":
            missing = [
                f"multi_turn.tracker_{name}"
                for name in ("base_url", "model")
                if not str(getattr(self, name)).strip()
            ]
            if missing:
                raise TrackerConfigError(
                    f"multi_turn.state_tracker='llm' needs {' and '.join(missing)} (an "
                    "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1, and its model)"
                )
        if self.max_concurrency < 1 or self.max_prompt_features < 1:
            raise TrackerConfigError(
                "multi_turn.tracker_max_concurrency and tracker_max_prompt_features must be >= 1"
            )

    def chat_config(self) -> ChatConfig:
        """The `ChatConfig` of the tracker's client."""
        return ChatConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            max_concurrency=self.max_concurrency,
            fields="multi_turn.tracker_",
            tokenizer=self.tokenizer,
        )


# ----------------------------------------------------------------------------------- prompt
def item_noun(domain: str) -> str:
    """The prompt's {item}: "movie", "video game" or "CD"."""
    return _ITEM_NOUNS[phrases.get_domain(domain).name]


def prompt_features(vocab: FeatureVocab, max_features: int = 200) -> list[str]:
    """Labels of the candidate features listed in the prompt.

    Genres, then categories, then decades; within a field the features carried by most items
    come first (ties by label); at most `max_features` in all.
    """
    counts = collections.Counter(f for feats in vocab.item_features for f in feats)
    out = []
    for field in PROMPT_FIELDS:
        feats = [f for f in vocab.features() if f[0] == field and counts[f] > 0]
        feats.sort(key=lambda f: (-counts[f], vocab.label(f)))
        out += [vocab.label(f) for f in feats]
    return out[:max_features]


def dialogue_lines(turns: Sequence[Mapping[str, Any]]) -> str:
    """The dialogue as "role: text" lines; the recommender's turns are "assistant"."""
    lines = []
    for turn in turns:
        role = "user" if turn["role"] == "user" else "assistant"
        lines.append(f"{role}: {' '.join(str(turn['text']).split())}\n")
    return "".join(lines)


def tracker_prompt(
    domain: str,
    feature_labels: Sequence[str],
    turns: Sequence[Mapping[str, Any]],
    excluded_features: bool = True,
) -> str:
    """Fills `TRACKER_PROMPT` for one dialogue.

    Args:
      domain: "movies" | "video games" | "CDs".
      feature_labels: the candidate features (see `prompt_features`).
      turns: the dialogue so far ({"role": "user" | "system", "text": ...} dicts).
      excluded_features: also ask for the features the user rules out.

    Returns:
      The single user message of the tracker request.
    """
    excluded = ',\n  "excluded features": ["listed features the user rules out"]'
    schema = SCHEMA.format(
        intents='"short phrases"',
        features='"listed features"',
        excluded=excluded if excluded_features else "",
    )
    return TRACKER_PROMPT.format(
        item=item_noun(domain),
        features=", ".join(feature_labels),
        excluded_rule=EXCLUDED_RULE if excluded_features else "",
        schema=schema,
        conversation=dialogue_lines(turns),
    )


# --------------------------------------------------------------------------------- tracking
@dataclasses.dataclass
class TrackResult:
    """The tracker's reading of one dialogue after its newest user turn.

    Attributes:
      included: features the user asks for (the whole dialogue; for a fallback, this turn's).
      excluded: features the user rules out (likewise).
      intents: the model's "human intents" (empty for a fallback).
      unknown: returned feature names not in the vocabulary (dropped).
      fallback: None when the reply was used; "unparsable" or "endpoint" when the rule
        tracker read the newest user turn instead.
      reply: the model's raw reply ("" when the endpoint failed).
      usage: the tokens of this dialogue's request (a request shared by identical dialogues
        counts for each; zero when the endpoint failed).
    """

    included: list[Feature]
    excluded: list[Feature]
    intents: list[str]
    unknown: list[str] = dataclasses.field(default_factory=list)
    fallback: str | None = None
    reply: str = ""
    usage: TokenUsage = TokenUsage()

    def apply(self, state: ConversationState) -> None:
        """Updates `state`: a used reply replaces its lists; a fallback folds this turn's."""
        if self.fallback is None:
            state.included = list(self.included)
            state.excluded = list(self.excluded)
        else:
            state.fold(StatedFeatures(list(self.included), list(self.excluded)))
        state.intents = list(self.intents)


def _last_user_text(state: ConversationState) -> str:
    for turn in reversed(state.turns):
        if turn["role"] == "user":
            return str(turn["text"])
    return ""


class LLMStateTracker:
    """Dialogue-state tracking by a chat model, with the rule tracker as the fallback.

    Args:
      vocab: the dataset's feature vocabulary.
      domain: "movies" | "video games" | "CDs".
      client: a configured `ChatClient` (endpoint, retries, concurrency, cache).
      max_prompt_features: candidate features listed in the prompt.
      excluded_features: also ask for the features the user rules out.
      fallback_on_endpoint_error: when the endpoint fails after every retry, read the turn by
        rules instead of raising `EndpointError` (the chat; a multi-turn run raises, and its
        cache makes the re-run repeat no call).
    """

    def __init__(
        self,
        vocab: FeatureVocab,
        domain: str,
        client: ChatClient,
        max_prompt_features: int = 200,
        excluded_features: bool = True,
        fallback_on_endpoint_error: bool = False,
    ):
        self.vocab = vocab
        self.domain = phrases.get_domain(domain).name
        self.client = client
        self.excluded_features = bool(excluded_features)
        self.fallback_on_endpoint_error = bool(fallback_on_endpoint_error)
        self.feature_labels = prompt_features(vocab, max_prompt_features)
        self.mapper = FeatureMapper(vocab)
        self.stats: collections.Counter[str] = collections.Counter()
        self.unknown_names: collections.Counter[str] = collections.Counter()

    def messages(self, state: ConversationState) -> list[dict[str, str]]:
        """[user: the tracker prompt with the dialogue of `state`]."""
        prompt = tracker_prompt(
            self.domain, self.feature_labels, state.turns, self.excluded_features
        )
        return [{"role": "user", "content": prompt}]

    def _rules(
        self, state: ConversationState, ignore_titles: Sequence[str], reason: str, reply: str
    ) -> TrackResult:
        stated = self.vocab.stated(_last_user_text(state), ignore_titles)
        self.stats[f"fallback_{reason}"] += 1
        return TrackResult(stated.included, stated.excluded, [], fallback=reason, reply=reply)

    def interpret(
        self, reply: str, state: ConversationState, ignore_titles: Sequence[str] = ()
    ) -> TrackResult:
        """The result of one reply: mapped features, or the rule fallback if unparsable.

        Args:
          reply: the model's reply.
          state: the dialogue it answers (its newest user turn is read on a fallback).
          ignore_titles: titles blanked before rule matching (the user's liked items).
        """
        try:
            parsed = parse_reply(reply)
        except ReplyParseError as e:
            n = self.stats["fallback_unparsable"]
            if n < _MAX_WARNINGS:
                logging.warning(
                    "state tracker: unparsable reply (%s); the rule tracker reads this turn%s: %r",
                    e,
                    "" if n + 1 < _MAX_WARNINGS else " (further ones are only counted)",
                    str(reply)[:300],
                )
            return self._rules(state, ignore_titles, "unparsable", str(reply))
        included: list[Feature] = []
        excluded: list[Feature] = []
        unknown: list[str] = []
        for names, negate in ((parsed.features, False), (parsed.excluded, True)):
            for name in names:
                feats, negated = self.mapper.map(name)
                if not feats:
                    unknown.append(name)
                    continue
                target = excluded if negated or negate else included
                target += [f for f in feats if f not in target]
        both = set(included) & set(excluded)  # Contradictory: no constraint either way.
        included = [f for f in included if f not in both]
        excluded = [f for f in excluded if f not in both]
        self.stats["parsed"] += 1
        self.stats["features_mapped"] += len(included) + len(excluded)
        self.stats["features_unknown"] += len(unknown)
        self.unknown_names.update(n.casefold() for n in unknown)
        return TrackResult(included, excluded, parsed.intents, unknown, None, str(reply))

    def track_many(
        self,
        states: Sequence[ConversationState],
        ignore_titles: Sequence[Sequence[str]] | None = None,
    ) -> list[TrackResult]:
        """Tracks a batch of dialogues (identical ones sent once, concurrently), in order.

        Args:
          states: the dialogues, each ending with the user turn to read.
          ignore_titles: per dialogue, titles the rule fallback blanks (liked items).

        Raises:
          EndpointError: the endpoint failed after every retry (unless
            `fallback_on_endpoint_error`).
        """
        if ignore_titles is None:
            ignore_titles = [()] * len(states)
        if len(ignore_titles) != len(states):
            raise ValueError(f"{len(ignore_titles)} title lists for {len(states)} dialogues")
        if not states:
            return []
        batch = [self.messages(s) for s in states]
        try:
            replies = self.client.complete_many(batch)
        except EndpointError as e:
            if not self.fallback_on_endpoint_error:
                raise
            logging.error("state tracker: %s; the rule tracker reads this turn", e)
            return [self._rules(s, t, "endpoint", "") for s, t in zip(states, ignore_titles)]
        results = [self.interpret(r, s, t) for r, s, t in zip(replies, states, ignore_titles)]
        for result, messages in zip(results, batch):
            result.usage = self.client.usage_for(messages)
        return results

    def update(
        self,
        states: Sequence[ConversationState],
        ignore_titles: Sequence[Sequence[str]] | None = None,
    ) -> list[TrackResult]:
        """`track_many`, then applies each result to its state (in place)."""
        results = self.track_many(states, ignore_titles)
        for state, result in zip(states, results):
            result.apply(state)
        return results

    def summary(self) -> dict[str, Any]:
        """Counts so far: parsed replies, fallbacks, mapped and dropped feature names."""
        return {
            "parsed": self.stats["parsed"],
            "fallback_unparsable": self.stats["fallback_unparsable"],
            "fallback_endpoint": self.stats["fallback_endpoint"],
            "features_mapped": self.stats["features_mapped"],
            "features_unknown": self.stats["features_unknown"],
            "top_unknown": [n for n, _ in self.unknown_names.most_common(10)],
            "requests": self.client.requests_made,
            "cache_hits": self.client.cache_hits,
        }


def make_client(
    settings: TrackerSettings, cache_path: str | os.PathLike[str] | None = None
) -> ChatClient | None:
    """The tracker's chat client (None for the rule tracker); no request is sent.

    Call it before any long work: it is where a missing API key shows.

    Raises:
      TrackerConfigError: the API-key variable is missing for a remote endpoint.
    """
    if settings.kind == "rules":
        return None
    try:
        return ChatClient(settings.chat_config(), cache_path=cache_path)
    except MissingApiKeyError as e:
        raise TrackerConfigError(
            f"state tracker: environment variable {settings.api_key_env} is not set; it must "
            f"hold the API key for {settings.base_url} (multi_turn.tracker_api_key_env='' for "
            "servers without a key)"
        ) from e
    except EndpointConfigError as e:
        raise TrackerConfigError(f"state tracker: {e}") from e


def make_tracker(
    settings: TrackerSettings,
    vocab: FeatureVocab,
    domain: str,
    cache_path: str | os.PathLike[str] | None = None,
    fallback_on_endpoint_error: bool = False,
    client: ChatClient | None = None,
) -> LLMStateTracker | None:
    """The LLM tracker the settings ask for, or None for the rule tracker.

    Args:
      settings: the tracker settings.
      vocab: the dataset's feature vocabulary.
      domain: "movies" | "video games" | "CDs".
      cache_path: the JSONL response cache (ignored when `client` is given).
      fallback_on_endpoint_error: see `LLMStateTracker`.
      client: a client made earlier by `make_client`.

    Raises:
      TrackerConfigError: the API-key variable is missing for a remote endpoint.
    """
    if settings.kind == "rules":
        return None
    client = client if client is not None else make_client(settings, cache_path)
    return LLMStateTracker(
        vocab,
        domain,
        client,
        max_prompt_features=settings.max_prompt_features,
        excluded_features=settings.excluded_features,
        fallback_on_endpoint_error=fallback_on_endpoint_error,
    )
