"""The optional LLM user simulator: the paper's prompt against an OpenAI-compatible endpoint.

First turn (docs/method.md 4.2): the filled prompt as one user message. Later turns
(docs/method.md 5, step 6): the prompt, then the dialogue with roles swapped (the simulator's
own turns as "assistant", the recommender's as "user"). Every reply goes through the same leak
check as the template simulator; a leaking reply is requested again (with a reminder appended to
the prompt, so the retry is a new request and a new cache entry) up to `leak_retries` times,
then returned with `leaked=True`. "<END>" in a reply marks the dialogue done and is removed from
the text.
Each utterance carries the tokens of the calls behind it (`Utterance.usage`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

from latentcrs_jax.simulator import leak, phrases, prompts
from latentcrs_jax.simulator.chat_client import ChatClient
from latentcrs_jax.simulator.state import (
    END_TOKEN,
    DialogueState,
    Utterance,
    history_ids,
    recommended_system_text,
    respond_many_args,
)

Item = Mapping[str, Any]
Message = dict[str, str]

_END_RE = re.compile(r"\s*(?:<\s*END\s*>|⟨\s*END\s*⟩|\[\s*END\s*\])\s*", re.IGNORECASE)
_ROLE_PREFIX_RE = re.compile(r"^\s*(?:user|you)\s*:\s*", re.IGNORECASE)


def parse_reply(text: str) -> tuple[str, bool]:
    """Strips the end token and a "User:" prefix: (clean text, ended)."""
    ended = bool(_END_RE.search(text or ""))
    clean = _END_RE.sub(" ", text or "")
    clean = _ROLE_PREFIX_RE.sub("", clean.strip())
    return " ".join(clean.split()), ended


class LLMSimulator:
    """User simulator backed by a chat model.

    Args:
      items: the items table; items[i] is the dict of item id i (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      client: a configured `ChatClient` (endpoint, retries, concurrency, cache).
      leak_retries: how many times a leaking reply is requested again before it is flagged.
    """

    def __init__(
        self, items: Sequence[Item], domain: str, client: ChatClient, leak_retries: int = 2
    ):
        if leak_retries < 0:
            raise ValueError(f"leak_retries must be >= 0, got {leak_retries}")
        self.items = items
        self.domain = phrases.get_domain(domain)
        self.client = client
        self.leak_retries = int(leak_retries)

    def _item(self, item_id: int) -> Item:
        if not 0 < item_id < len(self.items):
            raise ValueError(f"item id {item_id} out of range [1, {len(self.items) - 1}]")
        return self.items[item_id]

    def prompt(self, history: Sequence[int], target: int) -> str:
        """The paper's first-turn prompt for one sample (history int[H] left-padded)."""
        titles = [str(self._item(h).get("title") or "") for h in history_ids(history)]
        return prompts.user_simulator_prompt(titles, self._item(int(target)), self.domain.name)

    def first_turn_messages(self, history: Sequence[int], target: int) -> list[Message]:
        """[user: prompt]."""
        return [{"role": "user", "content": self.prompt(history, target)}]

    def dialogue_messages(self, state: DialogueState) -> list[Message]:
        """[user: prompt] + the transcript with roles swapped (docs/method.md 5, step 6)."""
        messages = self.first_turn_messages(state.history, state.target)
        for turn in state.turns:
            role = "assistant" if turn["role"] == "user" else "user"
            messages.append({"role": role, "content": str(turn["text"])})
        return messages

    def _checked_reply(self, messages: list[Message], target: int) -> Utterance:
        """Asks the model, re-asking with a reminder while the reply names the target."""
        target_item = self._item(target)
        words = sorted(leak.distinctive_words(str(target_item.get("title") or "")))
        text, ended = parse_reply(self.client.complete(messages))
        usage = self.client.usage_for(messages)
        for attempt in range(1, self.leak_retries + 1):
            if leak.find_leak(text, target_item) is None:
                return Utterance(text, [], done=ended, usage=usage)
            retry = [dict(m) for m in messages]
            first = retry[0]
            first["content"] = first["content"] + prompts.LEAK_REMINDER.format(
                attempt=attempt,
                words=", ".join(f'"{w}"' for w in words[:8]) or '"the title"',
            )
            text, ended = parse_reply(self.client.complete(retry))
            usage = usage + self.client.usage_for(retry)
        fragment = leak.find_leak(text, target_item)
        if fragment is not None:
            logging.warning(
                "simulator reply still names target %d (%r) after %d retries: %r",
                target,
                fragment,
                self.leak_retries,
                text,
            )
        return Utterance(text, [], done=ended, leaked=fragment is not None, usage=usage)

    def first_turn(self, history: Sequence[int], target: int, sample_key: str = "") -> Utterance:
        """The first-turn utterance of one sample (`sample_key` is unused; the cache keys)."""
        del sample_key
        return self._checked_reply(self.first_turn_messages(history, target), int(target))

    def first_turns(
        self, histories: Sequence[Sequence[int]], targets: Sequence[int], keys: Sequence[str]
    ) -> list[Utterance]:
        """First turns of a batch, `llm_max_concurrency` requests at a time, in input order."""
        if not len(histories) == len(targets) == len(keys):
            raise ValueError(
                f"batch sizes differ: {len(histories)} histories, {len(targets)} targets, "
                f"{len(keys)} keys"
            )
        jobs = list(zip(histories, targets, keys))
        return self.client.map(lambda j: self.first_turn(*j), jobs)

    def start(
        self, history: Sequence[int], target: int, sample_key: str
    ) -> tuple[DialogueState, Utterance]:
        """Starts a dialogue: the first turn and the state after it."""
        utt = self.first_turn(history, target, sample_key)
        state = DialogueState(
            sample_key=str(sample_key),
            target=int(target),
            history=history_ids(history),
            turns=[{"role": "user", "text": utt.text, "items": []}],
            done=utt.done,
        )
        return state, utt

    def respond(
        self,
        state: DialogueState,
        recommended: Sequence[int],
        system_text: str | None = None,
    ) -> tuple[DialogueState, Utterance]:
        """The model's reply to one recommendation round (see `TemplateSimulator.respond`).

        `accepted` is True when the target is among `recommended` (the paper's success rule);
        `done` when accepted or the model wrote "<END>".
        """
        if state.done:
            raise ValueError(f"dialogue {state.sample_key!r} is already finished")
        rec = [int(i) for i in recommended]
        new = state.copy()
        new.rounds += 1
        if system_text is None:
            system_text = recommended_system_text(
                [str(self._item(i).get("title") or "") for i in rec]
            )
        new.turns.append({"role": "system", "text": system_text, "items": rec})
        new.shown += [i for i in dict.fromkeys(rec) if i not in new.shown]
        utt = self._checked_reply(self.dialogue_messages(new), new.target)
        utt.accepted = new.target in rec
        utt.done = utt.done or utt.accepted
        new.accepted = utt.accepted
        new.done = utt.done
        new.turns.append({"role": "user", "text": utt.text, "items": []})
        return new, utt

    def respond_many(
        self,
        states: Sequence[DialogueState],
        recommended: Sequence[Sequence[int]],
        system_texts: Sequence[str | None] | None = None,
    ) -> list[tuple[DialogueState, Utterance]]:
        """`respond` over many dialogues concurrently, results in input order."""
        jobs = respond_many_args(states, recommended, system_texts)
        return self.client.map(lambda j: self.respond(*j), jobs)


__all__ = ["END_TOKEN", "LLMSimulator", "parse_reply"]
