"""Transcripts of simulated dialogues: one JSON object per line, written atomically.

Each line is a `Transcript.to_dict()`: the system, the sample (index, key, target and its title),
the first successful round (null for a failure) and the recommender's `ConversationState`
(every turn in order with the items shown, the stated and excluded features).
`read_transcripts(write_transcripts(...))` gives back equal objects.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax import fileio
from latentcrs_jax.conversation.state import ConversationState


@dataclasses.dataclass
class Transcript:
    """One dialogue of one system.

    Attributes:
      system: the system's name ("latentcrs_f").
      label: its table label ("LatentCRS^F").
      sample_index: index into the test split.
      sample_key: the sample's key (seeds the template simulator).
      target: target item id.
      target_title: the target as shown to readers.
      success_round: the first round (1-based) whose shown items held the target, or None.
      state: the recommender's view of the dialogue.
    """

    system: str
    label: str
    sample_index: int
    sample_key: str
    target: int
    target_title: str
    success_round: int | None
    state: ConversationState

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["state"] = self.state.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Transcript:
        """Inverse of `to_dict`."""
        rnd = d.get("success_round")
        return cls(
            system=str(d["system"]),
            label=str(d["label"]),
            sample_index=int(d["sample_index"]),
            sample_key=str(d["sample_key"]),
            target=int(d["target"]),
            target_title=str(d["target_title"]),
            success_round=None if rnd is None else int(rnd),
            state=ConversationState.from_dict(d["state"]),
        )


def write_transcripts(path: str | os.PathLike, transcripts: Sequence[Transcript]) -> None:
    """Writes JSONL atomically (one transcript per line)."""
    lines = [json.dumps(t.to_dict(), ensure_ascii=False, sort_keys=True) for t in transcripts]
    fileio.write_text(path, "".join(line + "\n" for line in lines))


def read_transcripts(path: str | os.PathLike) -> list[Transcript]:
    """Reads a file written by `write_transcripts`."""
    with open(path, encoding="utf-8") as f:
        return [Transcript.from_dict(json.loads(line)) for line in f if line.strip()]
