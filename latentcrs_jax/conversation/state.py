"""Dialogue state of the recommender side: the turns, the stated features, the items shown.

One `ConversationState` per dialogue, used by the multi-turn evaluation and by the chat. It
records every turn in order, folds each user turn's stated features (`features.FeatureVocab`)
into an included and an excluded list (a later mention overrides an earlier one: "no horror"
after "horror" moves Horror to the excluded list), and keeps the items already shown so the
hard filter can push them back. An LLM state tracker (`llm_tracker.py`) instead replaces the
feature lists with its reading of the whole dialogue and records its "human intents".
`ranking_text` is what the recommender embeds: by default the accumulated user side of the
dialogue, or only the last user turn, or the tracker's intents joined by ". " (the paper's
embedding input; the last user turn when there are none). `to_dict`/`from_dict` round-trip
through JSON (transcripts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from latentcrs_jax.conversation.features import Feature, FeatureVocab, StatedFeatures

RANKING_TEXTS = ("dialogue", "last", "intents")


@dataclasses.dataclass
class ConversationState:
    """What the recommender knows about one dialogue.

    Attributes:
      history: liked item ids, oldest first (no padding).
      turns: the dialogue, a list of {"role": "user" | "system", "text": str, "items": [ids]}.
      included: stated features, in order of (latest) mention.
      excluded: features the user ruled out ("no horror").
      shown: item ids shown so far, in order, without repeats.
      text_turns: indices into `turns` of the user turns whose text is ranked (a refinement
        such as "not these" adds a turn that carries no request).
      intents: the LLM state tracker's latest "human intents" (empty with the rule tracker).
    """

    history: list[int] = dataclasses.field(default_factory=list)
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    included: list[Feature] = dataclasses.field(default_factory=list)
    excluded: list[Feature] = dataclasses.field(default_factory=list)
    shown: list[int] = dataclasses.field(default_factory=list)
    text_turns: list[int] = dataclasses.field(default_factory=list)
    intents: list[str] = dataclasses.field(default_factory=list)

    # ------------------------------------------------------------------------------ updates
    def add_user_turn(
        self,
        text: str,
        vocab: FeatureVocab | None = None,
        ignore_titles: Iterable[str] = (),
        ranked: bool = True,
    ) -> StatedFeatures:
        """Appends a user turn and folds its stated features into the state.

        Args:
          text: what the user said.
          vocab: the feature vocabulary; None records the turn without matching features.
          ignore_titles: titles blanked before matching (the user's liked items).
          ranked: whether the turn's text joins the ranking text.

        Returns:
          The features stated in this turn.
        """
        self.turns.append({"role": "user", "text": str(text), "items": []})
        if ranked:
            self.text_turns.append(len(self.turns) - 1)
        if vocab is None:
            return StatedFeatures()
        stated = vocab.stated(text, ignore_titles)
        self.fold(stated)
        return stated

    def fold(self, stated: StatedFeatures) -> None:
        """Folds one turn's stated features into the lists (a later mention wins)."""
        for f in stated.included:
            self.excluded = [g for g in self.excluded if g != f]
            self.included = [g for g in self.included if g != f] + [f]
        for f in stated.excluded:
            self.included = [g for g in self.included if g != f]
            self.excluded = [g for g in self.excluded if g != f] + [f]

    def add_system_turn(self, text: str, items: Sequence[int]) -> None:
        """Appends a recommendation turn and marks its items as shown."""
        ids = [int(i) for i in items]
        self.turns.append({"role": "system", "text": str(text), "items": ids})
        seen = set(self.shown)
        for i in ids:
            if i not in seen:
                self.shown.append(i)
                seen.add(i)

    # ------------------------------------------------------------------------------ queries
    @property
    def user_texts(self) -> list[str]:
        """Texts of the ranked user turns, in order."""
        return [self.turns[i]["text"] for i in self.text_turns]

    @property
    def rounds(self) -> int:
        """Recommendation turns so far."""
        return sum(t["role"] == "system" for t in self.turns)

    def ranking_text(self, mode: str = "dialogue", max_chars: int | None = None) -> str:
        """The text the recommender ranks with.

        Args:
          mode: "dialogue" (the ranked user turns joined by spaces), "last" (the last one) or
            "intents" (`intents` joined by ". ", or the last ranked turn when there are none).
          max_chars: if set, the oldest turns are dropped (and the last one cut) to fit, so a
            long dialogue keeps its newest words inside the encoder's token limit.

        Returns:
          The text ("" before any user turn).
        """
        if mode not in RANKING_TEXTS:
            raise ValueError(f"ranking text must be one of {RANKING_TEXTS}, got {mode!r}")
        texts = [" ".join(t.split()) for t in self.user_texts]
        texts = [t for t in texts if t]
        intents = [" ".join(str(i).split()) for i in self.intents]
        intents = [i for i in intents if i]
        if mode == "intents" and intents:
            texts = [". ".join(intents)]
        elif mode != "dialogue":
            texts = texts[-1:]
        if max_chars is not None:
            kept: list[str] = []
            size = 0
            for t in reversed(texts):
                if kept and size + len(t) + 1 > max_chars:
                    break
                kept.insert(0, t[:max_chars])
                size += len(t) + 1
            texts = kept
        return " ".join(texts)

    # ------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (features as [field, key] lists)."""
        d = dataclasses.asdict(self)
        d["included"] = [list(f) for f in self.included]
        d["excluded"] = [list(f) for f in self.excluded]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConversationState:
        """Inverse of `to_dict`."""
        return cls(
            history=[int(i) for i in d.get("history", ())],
            turns=[
                {
                    "role": str(t["role"]),
                    "text": str(t["text"]),
                    "items": [int(i) for i in t["items"]],
                }
                for t in d.get("turns", ())
            ],
            included=[(str(f), str(k)) for f, k in d.get("included", ())],
            excluded=[(str(f), str(k)) for f, k in d.get("excluded", ())],
            shown=[int(i) for i in d.get("shown", ())],
            text_turns=[int(i) for i in d.get("text_turns", ())],
            intents=[str(i) for i in d.get("intents", ())],
        )
