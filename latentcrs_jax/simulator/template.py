"""The default user simulator: deterministic, keyless, template-based.

First turn: the user asks for the target using at most `max_conditions` of its attributes
(genres, decade or year, tags; categories, features, description phrases), sometimes naming a
liked history item, with phrasing drawn from the banks in `phrases.py`. Later turns: the user
accepts when the target is among the recommended items, else refuses and reveals one attribute
not yet revealed; when nothing is left it says so and repeats a condition.

Determinism: every random choice comes from a `random.Random` seeded by a hash of
(seed, sample key[, turn]), so an utterance depends only on the sample, never on call order.

No leaks: conditions whose value names the target and history items whose title names it are
excluded up front; every composed utterance is checked with `leak.find_leak` in strict mode
(a title made only of common words, such as "It", may not appear even as an ordinary word,
except as a stated condition value) and re-drawn on a leak; after `_MAX_ATTEMPTS` draws the
history mention is dropped, then conditions one by one, then fixed fallbacks are tried.
A leaking utterance is never returned (a RuntimeError is raised if even the fallbacks leak).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from latentcrs_jax.simulator import attributes, phrases
from latentcrs_jax.simulator.attributes import Condition
from latentcrs_jax.simulator.state import (
    DialogueState,
    Utterance,
    history_ids,
    recommended_system_text,
    respond_many_args,
)
from latentcrs_jax.simulator.template_render import (
    Item,
    cap,
    leaks,
    lower_first,
    render_clause,
    render_first_turn,
    sample_rng,
)

_MAX_ATTEMPTS = 30  # Re-draws of the phrasing before parts are dropped.
_RECENT_HISTORY = 5  # The history item named is one of the last few.
_COUNT_WEIGHTS = (0.3, 0.4, 0.3)  # P(1, 2, 3 conditions) in the first turn, truncated.
_FIELD_WEIGHTS = {
    "genre": 3.0,
    "category": 3.0,
    "decade": 2.0,
    "tag": 1.5,
    "feature": 1.5,
    "description": 1.5,
    "year": 0.6,
}
_REVEAL_TIER = {
    "genre": 0,
    "category": 0,
    "decade": 1,
    "tag": 1,
    "feature": 1,
    "description": 1,
    "year": 2,
}


class TemplateSimulator:
    """Deterministic template user simulator over an items table.

    Args:
      items: the items table; items[i] is the dict of item id i (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      seed: simulator seed; with the sample key it seeds every choice.
      max_conditions: at most this many conditions per turn (the paper asks for fewer than 3).
      history_mention_prob: probability that the first turn names a liked history item.
      max_tags: at most this many tags of an item are used.
    """

    def __init__(
        self,
        items: Sequence[Item],
        domain: str,
        *,
        seed: int = 0,
        max_conditions: int = 3,
        history_mention_prob: float = 0.5,
        max_tags: int = 5,
    ):
        if max_conditions < 0:
            raise ValueError(f"max_conditions must be >= 0, got {max_conditions}")
        if not 0.0 <= history_mention_prob <= 1.0:
            raise ValueError(f"history_mention_prob must be in [0, 1], got {history_mention_prob}")
        self.items = items
        self.domain = phrases.get_domain(domain)
        self.seed = int(seed)
        self.max_conditions = int(max_conditions)
        self.history_mention_prob = float(history_mention_prob)
        self.max_tags = int(max_tags)
        self._pools: dict[int, list[Condition]] = {}

    # ----------------------------------------------------------------------------- helpers
    def _item(self, item_id: int) -> Item:
        if not 0 < item_id < len(self.items):
            raise ValueError(f"item id {item_id} out of range [1, {len(self.items) - 1}]")
        return self.items[item_id]

    def conditions_of(self, target: int) -> list[Condition]:
        """Leak-safe conditions of an item (cached)."""
        if target not in self._pools:
            self._pools[target] = attributes.safe_conditions(
                self._item(target), self.domain.name, self.max_tags
            )
        return self._pools[target]

    def _choose_conditions(self, pool: list[Condition], rng: random.Random) -> list[Condition]:
        n_max = min(self.max_conditions, len(pool))
        if n_max == 0:
            return []
        k = rng.choices(range(1, n_max + 1), weights=_COUNT_WEIGHTS[:n_max])[0]
        chosen: list[Condition] = []
        candidates = list(pool)
        while len(chosen) < k and candidates:
            weights = [_FIELD_WEIGHTS.get(f, 1.0) for f, _ in candidates]
            pick = rng.choices(range(len(candidates)), weights=weights)[0]
            cond = candidates.pop(pick)
            chosen.append(cond)
            if cond[0] in ("decade", "year"):  # One time condition per turn.
                candidates = [c for c in candidates if c[0] not in ("decade", "year")]
        order = {c: i for i, c in enumerate(pool)}
        return sorted(chosen, key=order.__getitem__)

    def _history_choice(
        self, history: list[int], target: int, rng: random.Random
    ) -> tuple[int, str] | None:
        target_item = self._item(target)
        target_name = attributes.display_title(target_item.get("title", "")).casefold()
        options = []
        for h in history[-_RECENT_HISTORY:]:
            if h == target or not 0 < h < len(self.items):
                continue
            title = self.items[h].get("title") or ""
            name = attributes.display_title(title)
            if not name or name.casefold() == target_name:
                continue
            if leaks(name, target_item) or leaks(title, target_item):
                continue
            options.append((h, name))
        return rng.choice(options) if options else None

    def _compose(
        self,
        rng: random.Random,
        target: int,
        conds: list[Condition],
        hist: tuple[int, str] | None,
    ) -> Utterance:
        """Renders until an utterance does not leak, dropping parts as a last resort."""
        target_item = self._item(target)
        plans = [(conds, hist)]
        if hist is not None:
            plans.append((conds, None))
        plans += [(conds[:n], None) for n in range(len(conds) - 1, -1, -1)]
        for plan_conds, plan_hist in plans:
            for _ in range(_MAX_ATTEMPTS):
                text = render_first_turn(
                    plan_conds, plan_hist[1] if plan_hist else None, self.domain, rng
                )
                if leaks(text, target_item, plan_conds) is None:
                    return Utterance(text, list(plan_conds), plan_hist[0] if plan_hist else None)
        for text in phrases.FALLBACKS:
            if leaks(text, target_item) is None:
                return Utterance(text, [], None)
        raise RuntimeError(f"every fallback utterance names target {target}: {target_item}")

    # ---------------------------------------------------------------------------- public API
    def first_turn(self, history: Sequence[int], target: int, sample_key: str) -> Utterance:
        """Writes the first-turn utterance of one sample.

        Args:
          history: int[H] history item ids, left-padded with 0 (oldest first).
          target: the target item id.
          sample_key: a key unique to the sample (e.g. "test/123"); with the seed it seeds all
            choices, so the result is independent of call order.

        Returns:
          An `Utterance` with the text, the conditions used and the history item named.
        """
        target = int(target)
        rng = sample_rng(self.seed, sample_key, "first")
        conds = self._choose_conditions(self.conditions_of(target), rng)
        hist = None
        if rng.random() < self.history_mention_prob:
            hist = self._history_choice(history_ids(history), target, rng)
        return self._compose(rng, target, conds, hist)

    def first_turns(
        self, histories: Sequence[Sequence[int]], targets: Sequence[int], keys: Sequence[str]
    ) -> list[Utterance]:
        """`first_turn` over a batch: histories int[S, H] left-padded, targets int[S]."""
        if not len(histories) == len(targets) == len(keys):
            raise ValueError(
                f"batch sizes differ: {len(histories)} histories, {len(targets)} targets, "
                f"{len(keys)} keys"
            )
        return [self.first_turn(h, t, k) for h, t, k in zip(histories, targets, keys)]

    def start(
        self, history: Sequence[int], target: int, sample_key: str
    ) -> tuple[DialogueState, Utterance]:
        """Starts a dialogue: the first turn and the state after it."""
        utt = self.first_turn(history, target, sample_key)
        state = DialogueState(
            sample_key=str(sample_key),
            target=int(target),
            history=history_ids(history),
            revealed=list(utt.conditions),
            turns=[{"role": "user", "text": utt.text, "items": []}],
        )
        return state, utt

    def _implied(self, revealed: Sequence[Condition]) -> set[Condition]:
        """Conditions that need no reveal: the decade once the year is known."""
        out = set(revealed)
        for field, value in revealed:
            if field == "year":
                out.add(("decade", attributes.decade_of(int(value))))
        return out

    def _next_reveal(self, state: DialogueState, rng: random.Random) -> list[Condition]:
        """Unrevealed conditions in reveal order (lowest tier first, seeded within a tier)."""
        known = self._implied(state.revealed)
        left = [c for c in self.conditions_of(state.target) if c not in known]
        rng.shuffle(left)
        has_decade = any(f == "decade" for f, _ in left)
        return sorted(
            left, key=lambda c: _REVEAL_TIER.get(c[0], 1) + (has_decade and c[0] == "year")
        )

    def respond(
        self,
        state: DialogueState,
        recommended: Sequence[int],
        system_text: str | None = None,
    ) -> tuple[DialogueState, Utterance]:
        """The user's reply to one recommendation round.

        Args:
          state: the dialogue so far (not modified).
          recommended: int[K] item ids shown this round (the top 5 in the paper's protocol).
          system_text: the recommender's utterance for the transcript; default: the paper's
            "The recommended items are: 1 <title> ..." format.

        Returns:
          (new state, reply). The reply accepts (accepted=done=True) if the target is among
          `recommended`; otherwise it refuses and reveals one unrevealed condition (listed in
          `reply.conditions`), or, with nothing left, says so and repeats a stated condition.
        """
        if state.done:
            raise ValueError(f"dialogue {state.sample_key!r} is already finished")
        rec = [int(i) for i in recommended]
        new = state.copy()
        new.rounds += 1
        rng = sample_rng(self.seed, state.sample_key, "turn", new.rounds)
        if system_text is None:
            titles = [attributes.display_title(self._item(i).get("title") or "") for i in rec]
            system_text = recommended_system_text(titles)
        new.turns.append({"role": "system", "text": system_text, "items": rec})
        new.shown += [i for i in dict.fromkeys(rec) if i not in new.shown]
        target_item = self._item(state.target)
        if state.target in rec:
            pos = rec.index(state.target)
            nth = phrases.ORDINALS[pos] if pos < len(phrases.ORDINALS) else "last"
            options = rng.sample(phrases.ACCEPTANCES, len(phrases.ACCEPTANCES))
            text = next(
                (t for t in (o.format(nth=nth) for o in options) if leaks(t, target_item) is None),
                "Yes, that one.",
            )
            utt = Utterance(text, [], accepted=True, done=True)
            new.accepted = new.done = True
        else:
            utt = self._refusal(new, rng, target_item)
            new.revealed += utt.conditions
        new.turns.append({"role": "user", "text": utt.text, "items": []})
        return new, utt

    def respond_many(
        self,
        states: Sequence[DialogueState],
        recommended: Sequence[Sequence[int]],
        system_texts: Sequence[str | None] | None = None,
    ) -> list[tuple[DialogueState, Utterance]]:
        """`respond` over many dialogues, results in input order."""
        jobs = respond_many_args(states, recommended, system_texts)
        return [self.respond(s, r, t) for s, r, t in jobs]

    def _refusal(self, state: DialogueState, rng: random.Random, target_item: Item) -> Utterance:
        for cond in self._next_reveal(state, rng):
            for _ in range(_MAX_ATTEMPTS):
                clause, starts_with_slot = render_clause(cond[0], [cond[1]], rng)
                prefix = "" if starts_with_slot else rng.choice(phrases.REVEAL_PREFIXES)
                body = prefix + (lower_first(clause) if prefix else clause)
                text = f"{rng.choice(phrases.REJECTIONS)} {cap(body)}"
                if leaks(text, target_item, [cond]) is None:
                    return Utterance(text, [cond])
        revealed = list(state.revealed)
        for _ in range(_MAX_ATTEMPTS):
            if revealed:
                field, value = rng.choice(revealed)
                clause, starts_with_slot = render_clause(field, [value], rng)
                clause = clause if starts_with_slot else lower_first(clause)
                text = rng.choice(phrases.EXHAUSTED).format(clause=clause)
            else:
                text = rng.choice(phrases.EXHAUSTED_EMPTY)
            if leaks(text, target_item, revealed) is None:
                return Utterance(text, [])
        for text in phrases.REJECTIONS:
            if leaks(text, target_item) is None:
                return Utterance(text, [])
        raise RuntimeError(f"every refusal names target {state.target}: {target_item}")


def first_turn(
    history: Sequence[int],
    target: int,
    items: Sequence[Item],
    domain: str,
    seed: int,
    sample_key: str,
    *,
    max_conditions: int = 3,
    history_mention_prob: float = 0.5,
) -> Utterance:
    """Functional form of `TemplateSimulator.first_turn` for one sample."""
    sim = TemplateSimulator(
        items,
        domain,
        seed=seed,
        max_conditions=max_conditions,
        history_mention_prob=history_mention_prob,
    )
    return sim.first_turn(history, target, sample_key)
