"""The CRS protocol on human dialogues: one ranking context per recommendation message.

For every recommender message that mentions at least one movie:
* targets: each mentioned movie that resolves to a catalogue item, unless it was already
  mentioned earlier in the dialogue (by either role): no target appears in its own context (its
  title would be there) and none is in the seeker's history. Repeats are counted, not scored.
* context: every earlier message of both roles, mentions written as their titles, joined by
  spaces; the oldest messages are dropped first to fit `max_chars` (the encoder reads at most
  256 tokens, so the newest words are the ones kept). The message itself and later ones never
  enter the context.
* history: the catalogue items of the movies the seeker mentioned in earlier messages, in order
  of first mention (the newest `history_len` kept).
* strict: per target, whether the seeker's questionnaire marks it suggested (1) and liked (1).
* stated features (for LatentCRS^F): the seeker's earlier messages read by the rule matcher
  (`features.FeatureVocab`), folded turn by turn as in the chat (a later mention wins), with the
  mentions (their titles as written, and their catalogue titles) blanked first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from latentcrs_jax.conversation.features import Feature, FeatureVocab
from latentcrs_jax.conversation.filter import item_title
from latentcrs_jax.conversation.state import ConversationState
from latentcrs_jax.dialogues.readers import RECOMMENDER, SEEKER, Dialogue
from latentcrs_jax.dialogues.resolve import Resolver

MAX_CONTEXT_CHARS = 1000


@dataclasses.dataclass(frozen=True)
class Context:
    """One ranking problem: a recommendation message of a dialogue and its targets.

    Attributes:
      dialogue: the dialogue's id.
      turn: index of the recommendation message in the dialogue.
      text: the earlier messages (see the module docstring).
      history: seeker-mentioned item ids, oldest first (no padding).
      targets: item ids to find.
      strict: per target, suggested and liked by the seeker's questionnaire.
      included / excluded: the seeker's stated features so far.
      turns: the earlier messages as (role, text), role "seeker" or "recommender", mentions
        written as their titles, none dropped (what an LLM reads; `text` is cut to fit the
        encoder).
    """

    dialogue: str
    turn: int
    text: str
    history: tuple[int, ...]
    targets: tuple[int, ...]
    strict: tuple[bool, ...]
    included: tuple[Feature, ...] = ()
    excluded: tuple[Feature, ...] = ()
    turns: tuple[tuple[str, str], ...] = ()

    def chat_turns(self) -> list[dict[str, str]]:
        """The earlier messages as the LLM prompts' turns: the seeker is "user"."""
        return [
            {"role": "user" if role == SEEKER else "assistant", "text": text}
            for role, text in self.turns
        ]


@dataclasses.dataclass
class ProtocolStats:
    """Counts over the dialogues (mention coverage lives in `Resolver.coverage`)."""

    dialogues: int = 0
    dialogues_without_context: int = 0
    messages: int = 0
    recommendation_messages: int = 0  # Recommender messages mentioning at least one movie.
    target_mentions: int = 0  # Movies mentioned in those messages.
    targets_unresolved: int = 0
    targets_repeated: int = 0  # Resolved, but mentioned earlier in the dialogue.
    targets: int = 0  # Scored targets.
    strict_targets: int = 0
    contexts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def join_newest(texts: Sequence[str], max_chars: int | None) -> str:
    """Joins non-empty texts by spaces, dropping the oldest (and cutting the oldest kept one,
    from its start) so that the result has at most `max_chars` characters."""
    texts = [t for t in texts if t]
    if max_chars is None:
        return " ".join(texts)
    kept: list[str] = []
    size = 0
    for t in reversed(texts):
        room = max_chars - size - (1 if kept else 0)
        if room <= 0:
            break
        kept.insert(0, t[-room:] if len(t) > room else t)
        size += len(kept[0]) + (1 if len(kept) > 1 else 0)
    return " ".join(kept)


def dialogue_contexts(
    dialogue: Dialogue,
    resolver: Resolver,
    vocab: FeatureVocab | None = None,
    history_len: int | None = None,
    max_chars: int | None = MAX_CONTEXT_CHARS,
    stats: ProtocolStats | None = None,
) -> list[Context]:
    """The ranking contexts of one dialogue, in message order (see the module docstring)."""
    stats = stats if stats is not None else ProtocolStats()
    stats.dialogues += 1
    out: list[Context] = []
    mentioned: set[int] = set()
    history: list[int] = []
    state = ConversationState()
    for n, turn in enumerate(dialogue.turns):
        stats.messages += 1
        items = [resolver.resolve(m) for m in turn.mentions]
        if turn.role == RECOMMENDER and turn.mentions:
            stats.recommendation_messages += 1
            targets, strict = [], []
            for mention, item in zip(turn.mentions, items):
                stats.target_mentions += 1
                if item is None:
                    stats.targets_unresolved += 1
                elif item in mentioned or item in targets:
                    stats.targets_repeated += 1
                else:
                    labels = dialogue.labels.get(mention.ref)
                    targets.append(item)
                    strict.append(bool(labels and labels.suggested == 1 and labels.liked == 1))
            if targets:
                kept = history[-history_len:] if history_len else history
                out.append(
                    Context(
                        dialogue.id,
                        n,
                        join_newest([t.text for t in dialogue.turns[:n]], max_chars),
                        tuple(kept),
                        tuple(targets),
                        tuple(strict),
                        tuple(state.included),
                        tuple(state.excluded),
                        tuple((t.role, t.text) for t in dialogue.turns[:n] if t.text),
                    )
                )
                stats.contexts += 1
                stats.targets += len(targets)
                stats.strict_targets += sum(strict)
        if turn.role == SEEKER:
            if vocab is not None:
                text = turn.text
                for m in turn.mentions:  # "(1999)" of a mention is not a stated year.
                    text = text.replace(m.title, " ") if m.title else text
                blank = [item_title(resolver.items[i]) for i in items if i is not None]
                state.fold(vocab.stated(text, blank))
            for item in items:
                if item is not None and item not in history:
                    history.append(item)
        mentioned.update(i for i in items if i is not None)
    stats.dialogues_without_context += not out
    return out


def build_contexts(
    dialogues: Iterable[Dialogue],
    resolver: Resolver,
    vocab: FeatureVocab | None = None,
    history_len: int | None = None,
    max_chars: int | None = MAX_CONTEXT_CHARS,
) -> tuple[list[Context], ProtocolStats]:
    """Every context of a stream of dialogues, with the protocol's counts."""
    stats = ProtocolStats()
    contexts: list[Context] = []
    for d in dialogues:
        contexts += dialogue_contexts(d, resolver, vocab, history_len, max_chars, stats)
    return contexts, stats


def history_matrix(contexts: Sequence[Context], width: int) -> np.ndarray:
    """int32[C, width] left-padded histories (the newest `width` items, right-aligned)."""
    out = np.zeros((len(contexts), width), np.int32)
    for row, c in enumerate(contexts):
        h = list(c.history)[-width:] if width else []
        if h:
            out[row, -len(h) :] = h
    return out
