"""Serialisable results and dialogue state shared by the template and LLM simulators."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax.simulator.attributes import Condition
from latentcrs_jax.simulator.tokens import TokenUsage

END_TOKEN = "<END>"  # What the paper's prompt asks the LLM to output when the dialogue ends.


@dataclasses.dataclass
class Utterance:
    """One simulated user turn.

    Attributes:
      text: what the user says (never names the target unless `leaked`).
      conditions: the (field, value) attributes of the target this turn reveals; for LLM
        replies this is empty (the LLM's content is not parsed).
      history_item: item id of the liked history item named, or None.
      accepted: the user accepts a recommendation (the target was shown).
      done: the user ends the conversation.
      leaked: an LLM reply still named the target after every leak retry (never for templates).
      usage: the tokens of the LLM calls behind this turn, leak retries included (None for
        templates: no call).
    """

    text: str
    conditions: list[Condition] = dataclasses.field(default_factory=list)
    history_item: int | None = None
    accepted: bool = False
    done: bool = False
    leaked: bool = False
    usage: TokenUsage | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (conditions as [field, value] lists; "usage" only when set)."""
        d = dataclasses.asdict(self)
        d["conditions"] = [list(c) for c in self.conditions]
        if self.usage is None:
            del d["usage"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Utterance:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["conditions"] = [(str(f), str(v)) for f, v in d.get("conditions", ())]
        if d.get("usage") is not None:
            d["usage"] = TokenUsage.from_dict(d["usage"])
        return cls(**d)


@dataclasses.dataclass
class DialogueState:
    """Explicit state of one simulated dialogue; `to_dict`/`from_dict` round-trip through JSON.

    Attributes:
      sample_key: the sample's key (seeds the template simulator's later turns).
      target: target item id.
      history: liked history item ids, oldest first, padding removed.
      revealed: conditions the user has stated so far, in order.
      shown: item ids the recommender has shown so far, in order, without repeats.
      turns: the transcript, a list of {"role": "user" | "system", "text": str, "items": [...]}.
      rounds: recommendation rounds answered so far.
      accepted: the user accepted a recommendation.
      done: the dialogue is over.
    """

    sample_key: str
    target: int
    history: list[int]
    revealed: list[Condition] = dataclasses.field(default_factory=list)
    shown: list[int] = dataclasses.field(default_factory=list)
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    rounds: int = 0
    accepted: bool = False
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["revealed"] = [list(c) for c in self.revealed]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DialogueState:
        """Inverse of `to_dict`."""
        d = dict(d)
        d["revealed"] = [(str(f), str(v)) for f, v in d.get("revealed", ())]
        d["history"] = [int(i) for i in d.get("history", ())]
        d["shown"] = [int(i) for i in d.get("shown", ())]
        d["turns"] = [dict(t) for t in d.get("turns", ())]
        return cls(**d)

    def copy(self) -> DialogueState:
        """A deep-enough copy (lists duplicated) so updates never alias the original."""
        return DialogueState.from_dict(self.to_dict())


def history_ids(history: Sequence[int] | Any) -> list[int]:
    """Left-padded history row (int32[H], 0 = PAD) to a list of item ids, oldest first."""
    return [int(i) for i in list(history) if int(i) > 0]


def recommended_system_text(titles: Sequence[str], features: Sequence[str] = ()) -> str:
    """The paper's system utterance (docs/method.md 5, step 5, `get_item_str`).

    "We infer you like :f1, f2. The recommended items are: 1 <title> 2 <title> ..."; the
    prefix appears only when 1-4 features were stated.
    """
    prefix = f"We infer you like :{', '.join(features)}. " if 1 <= len(features) <= 4 else ""
    listing = " ".join(f"{i + 1} {t}" for i, t in enumerate(titles))
    return f"{prefix}The recommended items are: {listing}"


def respond_many_args(
    states: Sequence[DialogueState],
    recommended: Sequence[Sequence[int]],
    system_texts: Sequence[str | None] | None,
) -> list[tuple[DialogueState, Sequence[int], str | None]]:
    """Checks and zips the arguments of a simulator's `respond_many`."""
    texts = list(system_texts) if system_texts is not None else [None] * len(states)
    if not len(states) == len(recommended) == len(texts):
        raise ValueError("states, recommended and system_texts must have the same length")
    return list(zip(states, recommended, texts))
