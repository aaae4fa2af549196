"""Multi-turn evaluation (docs/method.md 5): simulated dialogues, success rate and average turns.

Protocol, for every system of `config.multi_turn.systems` on the same seeded test samples:
* turn 0 is the sample's cached first-turn utterance (the simulate stage's x_u);
* after every user turn the state tracker reads the stated features: the rule matcher
  (`features.FeatureVocab`, default) or, with `state_tracker="llm"`, the paper's JSON prompt on
  an OpenAI-compatible endpoint (`llm_tracker.py`; one batched `complete_many` per round, its
  response cache in the stage folder, the rule matcher for a turn whose reply does not parse);
* each round 1..R: the recommender ranks every item with (history, ranking text), where the
  text is the accumulated user side of the dialogue (or the last user turn, or the LLM
  tracker's "human intents" joined by ". " as the paper embeds them); PAD and (by
  default) history items are never ranked; a filtered system applies the hard filter
  (LatentCRS^F, `filter.hard_filter`) to the top `candidates`, the others show the top `top_k`
  as ranked; success at the first round whose shown items hold the target;
* otherwise the simulator (template by default; the LLM simulator when configured) refuses and
  reveals one more attribute, and its reply joins the dialogue.
Metrics: SR@r = share of samples that succeeded by round r (r = 1..R); AT = mean over samples of
the success round, a failure counting R.

LatentCRS^V (`latentcrs_v`) re-ranks the top `validator_candidates` of ^F's list with a validator
(`validator.py`): the keyless stand-in by default, or an LLM on the `llm_*` endpoint with
`validator="llm"`. The LLM-only baseline (`llm_only`, `llm_recommender.py`) asks that endpoint
for titles each round; without an endpoint its row is skipped. Every LLM call is counted by
system and role, and `multi_turn.md` ends with the token-cost table (`costs.py`).

Rounds are batched across samples and systems: per round, every text a text-using system will
rank is embedded in one call (`EmbeddingMemo.prefetch`; systems that share a dialogue text
share its embedding), then each system scores its open dialogues `batch_size` rows at a time
(padded, so one compile per system), against every item at once or, with `item_chunk` > 0,
`item_chunk` items at a time under a running top-k (`evaluation/chunked.py`: the same lists).
The settings are in multi_turn.py, the per-system results and the files in
multi_turn_results.py, the pipeline stage in multi_turn_stage.py.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.conversation import filter as filter_lib
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import llm_tracker
from latentcrs_jax.conversation import transcripts as transcripts_lib
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.multi_turn import (
    LLM_ONLY,
    MultiTurnSettings,
    SystemSpec,
)
from latentcrs_jax.conversation.state import ConversationState
from latentcrs_jax.evaluation import chunked
from latentcrs_jax.simulator.state import DialogueState, Utterance, history_ids
from latentcrs_jax.simulator.tokens import TokenUsage


def sample_indices(num_available: int, num_samples: int, seed: int) -> list[int]:
    """The evaluated test samples: `num_samples` drawn with `random.Random(seed)`, sorted.

    All samples when `num_samples` is <= 0 or at least `num_available`.
    """
    if num_samples <= 0 or num_samples >= num_available:
        return list(range(num_available))
    return sorted(random.Random(seed).sample(range(num_available), num_samples))


def success_metrics(success_rounds: Sequence[int | None], rounds: int) -> dict[str, Any]:
    """SR after each round and AT (a failure counts `rounds`) of one system.

    Args:
      success_rounds: per sample, the first successful round (1-based) or None.
      rounds: R.

    Returns:
      {"samples", "successes", "success_rate": [SR@1..SR@R], "average_turns"}.
    """
    n = len(success_rounds)
    r = np.array([rounds + 1 if s is None else int(s) for s in success_rounds], dtype=np.int64)
    return {
        "samples": n,
        "successes": int((r <= rounds).sum()),
        "success_rate": [float((r <= k).mean()) if n else 0.0 for k in range(1, rounds + 1)],
        "average_turns": float(np.minimum(r, rounds).mean()) if n else 0.0,
    }


class EmbeddingMemo:
    """Wraps `embed(texts) -> float32[N, D]` with an in-memory cache of every text seen.

    `prefetch(texts)` embeds the unseen ones in one call, so later calls are lookups.
    """

    def __init__(self, embed: Callable[[Sequence[str]], np.ndarray]):
        self._embed = embed
        self._cache: dict[str, np.ndarray] = {}

    def prefetch(self, texts: Sequence[str]) -> None:
        """Embeds the texts not cached yet, together."""
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            for text, vec in zip(new, np.asarray(self._embed(new))):
                self._cache[text] = vec

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """float32[N, D] embeddings of `texts`, in order."""
        texts = list(texts)
        self.prefetch(texts)
        if not texts:
            return np.asarray(self._embed([]))
        return np.stack([self._cache[t] for t in texts])


@dataclasses.dataclass
class _Dialogue:
    sim: DialogueState
    conv: ConversationState
    system: str = ""
    success_round: int | None = None
    usage: dict[str, TokenUsage] = dataclasses.field(default_factory=dict)

    def spend(self, role: str, usage: TokenUsage | None) -> None:
        """Adds the tokens of a call made for this dialogue to its `role`."""
        if usage is not None:
            self.usage[role] = self.usage.get(role, TokenUsage()) + usage


def _score_rows(
    recommender,
    histories: np.ndarray,
    texts: Sequence[str],
    batch_size: int,
    k: int,
    mask: bool,
    item_chunk: int = 0,
) -> list[list[int]]:
    """Ranked ids (top k) of each row, scoring `batch_size` padded rows per call; with
    `item_chunk` > 0 and a recommender that has a `ranker`, that many items at a time (the
    same lists as `filter.rank_items` of the full scores)."""
    out: list[list[int]] = []
    ranker = getattr(recommender, "ranker", None) if item_chunk else None
    for start in range(0, len(texts), batch_size):
        h = histories[start : start + batch_size]
        t = list(texts[start : start + batch_size])
        n = len(t)
        if n < batch_size:
            h = np.concatenate([h, np.zeros((batch_size - n, h.shape[1]), h.dtype)])
            t += [""] * (batch_size - n)
        if ranker is not None:
            k_ids = min(int(k), ranker.num_ids - 1)
            ids, scores = ranker.top_k(h, t, k_ids, item_chunk, mask)
            out += chunked.ranked_lists(ids[:n], scores[:n])
            continue
        scores = np.asarray(recommender.score(h, t))[:n]
        out += filter_lib.rank_items(scores, h[:n], k=k, mask_history=mask)
    return out


def _shown_count(spec: SystemSpec, settings: MultiTurnSettings) -> int:
    """How many of the filtered list a system takes: ^V's candidates, else `top_k`."""
    return settings.validator_candidates if spec.validate else settings.top_k


def _recommend(
    spec: SystemSpec,
    conv: ConversationState,
    ranked: Sequence[int],
    vocab: FeatureVocab,
    titles: Sequence[str],
    has_title: Sequence[bool],
    settings: MultiTurnSettings,
) -> tuple[list[int], str]:
    """The items one system shows for one dialogue this round, and its utterance.

    For ^V (`spec.validate`) the list is ^F's top `validator_candidates`, to be re-ranked.
    """
    if not spec.hard_filter:
        shown = list(ranked[: settings.top_k])
        return shown, filter_lib.system_utterance([titles[i] for i in shown])
    shown = filter_lib.hard_filter(
        ranked,
        vocab.features_of,
        conv.included,
        conv.excluded,
        conv.shown,
        top_k=_shown_count(spec, settings),
        candidates=settings.candidates,
        has_title=has_title.__getitem__,
        shown_last=not settings.faithful_filter_order,
    )
    return shown, _filtered_utterance(conv, shown, vocab, titles)


def _filtered_utterance(conv, shown, vocab, titles) -> str:
    return filter_lib.system_utterance(
        [titles[i] for i in shown],
        [vocab.label(f) for f in conv.included],
        [vocab.label(f) for f in conv.excluded],
    )


def _validated(
    validator: Any,
    rows: Sequence[_Dialogue],
    candidates: Sequence[list[int]],
    texts: Sequence[str],
    vocab: FeatureVocab,
    titles: Sequence[str],
    settings: MultiTurnSettings,
) -> list[tuple[list[int], str]]:
    """^V's shown items and utterance per dialogue: the validator's order of ^F's candidates,
    items already shown behind the others (unless `faithful_filter_order`), the first top_k."""
    results = validator.rerank_many([d.conv.turns for d in rows], candidates, texts)
    out = []
    for d, result in zip(rows, results):
        d.spend("validator", result.usage if validator.kind == "llm" else None)
        order = result.order
        if not settings.faithful_filter_order:
            order = validator_lib.shown_last(order, d.conv.shown)
        shown = order[: settings.top_k]
        out.append((shown, _filtered_utterance(d.conv, shown, vocab, titles)))
    return out


def _llm_only(
    recommender: llm_rec_lib.LLMRecommender,
    rows: Sequence[_Dialogue],
    titles: Sequence[str],
    settings: MultiTurnSettings,
) -> list[tuple[list[int], str]]:
    """The LLM-only baseline's shown items and utterance per dialogue."""
    results = recommender.recommend_many([d.conv.turns for d in rows])
    out = []
    for d, result in zip(rows, results):
        d.spend("recommender", result.usage)
        history = d.conv.history if settings.mask_history else ()
        shown = llm_rec_lib.choose_shown(result.items, settings.top_k, d.conv.shown, history)
        out.append((shown, filter_lib.system_utterance([titles[i] for i in shown])))
    return out


def run_dialogues(
    recommenders: Mapping[str, Any],
    specs: Sequence[SystemSpec],
    histories: np.ndarray,
    targets: np.ndarray,
    keys: Sequence[str],
    first_utterances: Sequence[Utterance],
    simulator: Any,
    items: Sequence[Mapping[str, Any]],
    vocab: FeatureVocab,
    settings: MultiTurnSettings,
    prefetch: Callable[[Sequence[str]], None] | None = None,
    tracker: llm_tracker.LLMStateTracker | None = None,
    validator: Any = None,
    llm_recommender: llm_rec_lib.LLMRecommender | None = None,
) -> dict[str, list[_Dialogue]]:
    """Runs the protocol for every system on the same samples.

    Args:
      recommenders: recommender key -> `Recommender` (score(histories int32[B, H], texts) ->
        float32[B, N+1]).
      specs: the systems (rows).
      histories: int32[S, H] left-padded histories of the samples.
      targets: int32[S] target ids.
      keys: S sample keys.
      first_utterances: S first-turn utterances (the cached x_u; their `usage` counts as the
        simulator's tokens of every system's dialogue).
      simulator: `TemplateSimulator` or `LLMSimulator` (needs `respond_many`).
      items: the items table (items[0] is PAD).
      vocab: the feature vocabulary of `items`.
      settings: the protocol settings.
      prefetch: called with every text of a round before scoring (an `EmbeddingMemo`).
      tracker: the LLM state tracker (None: the rule tracker, `vocab.stated`); its calls are
        batched, one `complete_many` per round over every open dialogue of every system.
      validator: ^V's `validator.LLMValidator` or `validator.StandInValidator` (needed by a
        spec with `validate`); one batch per round.
      llm_recommender: the LLM-only baseline (needed by a spec whose recommender is LLM_ONLY).

    Returns:
      system name -> S dialogues in sample order.
    """
    histories = np.asarray(histories)
    n = len(targets)
    if not (histories.shape[0] == n == len(keys) == len(first_utterances)):
        raise ValueError("histories, targets, keys and first utterances must have one row each")
    hist_ids = [history_ids(h) for h in histories]
    hist_titles = [[str(items[i].get("title") or "") for i in h] for h in hist_ids]
    titles = [filter_lib.item_title(it) for it in items]
    has_title = [bool(it.get("title")) for it in items]
    batch = min(settings.batch_size, max(n, 1))
    rule_vocab = vocab if tracker is None else None  # The LLM tracker reads turns in batches.
    dialogues: dict[str, list[_Dialogue]] = {}
    for spec in specs:
        rows = []
        for j in range(n):
            utt = first_utterances[j]
            sim = DialogueState(
                sample_key=str(keys[j]),
                target=int(targets[j]),
                history=list(hist_ids[j]),
                revealed=list(utt.conditions),
                turns=[{"role": "user", "text": utt.text, "items": []}],
                done=bool(utt.done),
            )
            conv = ConversationState(history=list(hist_ids[j]))
            conv.add_user_turn(utt.text, rule_vocab, hist_titles[j])
            rows.append(_Dialogue(sim, conv, spec.name))
            rows[-1].spend("simulator", utt.usage)
        dialogues[spec.name] = rows

    def track(pairs: Sequence[tuple[_Dialogue, Sequence[str]]]) -> None:
        # Every system's dialogue starts the same: identical requests are sent once.
        results = tracker.update([d.conv for d, _ in pairs], [t for _, t in pairs])
        for (d, _), result in zip(pairs, results):
            d.spend("tracker", result.usage)

    if tracker is not None:
        track(
            [
                (d, hist_titles[j])
                for s in specs
                if s.tracked
                for j, d in enumerate(dialogues[s.name])
            ]
        )
    start = time.perf_counter()
    for rnd in range(1, settings.rounds + 1):
        open_rows = {
            s.name: [j for j, d in enumerate(dialogues[s.name]) if d.success_round is None]
            for s in specs
        }
        texts = {
            s.name: [
                dialogues[s.name][j].conv.ranking_text(settings.ranking_text)
                for j in open_rows[s.name]
            ]
            for s in specs
        }
        if prefetch is not None:
            prefetch(
                [
                    t
                    for s in specs
                    if s.uses_text or (s.validate and getattr(validator, "kind", "") == "standin")
                    for t in texts[s.name]
                ]
            )
        replies: list[tuple[_Dialogue, list[int], str, list[str]]] = []
        for spec in specs:
            rows = open_rows[spec.name]
            if not rows:
                continue
            ds = [dialogues[spec.name][j] for j in rows]
            if spec.recommender == LLM_ONLY:
                proposals = _llm_only(llm_recommender, ds, titles, settings)
            else:
                k = settings.candidates + 2 * _shown_count(spec, settings)
                ranked = _score_rows(
                    recommenders[spec.recommender],
                    histories[rows],
                    texts[spec.name],
                    batch,
                    k,
                    settings.mask_history,
                    settings.item_chunk,
                )
                proposals = [
                    _recommend(spec, d.conv, ids, vocab, titles, has_title, settings)
                    for d, ids in zip(ds, ranked)
                ]
                if spec.validate:
                    candidates = [shown for shown, _ in proposals]
                    proposals = _validated(
                        validator, ds, candidates, texts[spec.name], vocab, titles, settings
                    )
            for j, d, (shown, text) in zip(rows, ds, proposals):
                d.conv.add_system_turn(text, shown)
                if int(targets[j]) in shown:
                    d.success_round = rnd
                elif rnd < settings.rounds and not d.sim.done:
                    replies.append((d, shown, text, hist_titles[j]))
        if replies:
            answers = simulator.respond_many(
                [d.sim for d, *_ in replies], [r[1] for r in replies], [r[2] for r in replies]
            )
            for (d, _, _, ignore), (new_sim, utt) in zip(replies, answers):
                d.sim = new_sim
                d.conv.add_user_turn(utt.text, rule_vocab, ignore)
                d.spend("simulator", utt.usage)
            if tracker is not None:
                tracked = {s.name for s in specs if s.tracked}
                track([(r[0], r[3]) for r in replies if r[0].system in tracked])
        logging.info(
            "multi-turn round %d/%d: %s (%.1fs)",
            rnd,
            settings.rounds,
            ", ".join(
                f"{s.name} SR {np.mean([d.success_round is not None for d in rows]):.3f}"
                for s, rows in ((s, dialogues[s.name]) for s in specs)
            ),
            time.perf_counter() - start,
        )
    return dialogues


def to_transcripts(
    specs: Sequence[SystemSpec],
    dialogues: Mapping[str, Sequence[_Dialogue]],
    keys: Sequence[str],
    targets: np.ndarray,
    items: Sequence[Mapping[str, Any]],
    labels: Mapping[str, str],
) -> dict[str, list[transcripts_lib.Transcript]]:
    return {
        spec.name: [
            transcripts_lib.Transcript(
                system=spec.name,
                label=labels.get(spec.name, spec.label),
                sample_index=j,
                sample_key=str(keys[j]),
                target=int(targets[j]),
                target_title=filter_lib.item_title(items[int(targets[j])]),
                success_round=d.success_round,
                state=d.conv,
            )
            for j, d in enumerate(dialogues[spec.name])
        ]
        for spec in specs
    }


def simulate_dialogues(
    recommenders: Mapping[str, Any],
    specs: Sequence[SystemSpec],
    histories: np.ndarray,
    targets: np.ndarray,
    keys: Sequence[str],
    first_utterances: Sequence[Utterance],
    simulator: Any,
    items: Sequence[Mapping[str, Any]],
    vocab: FeatureVocab,
    settings: MultiTurnSettings,
    prefetch: Callable[[Sequence[str]], None] | None = None,
    tracker: llm_tracker.LLMStateTracker | None = None,
    validator: Any = None,
    llm_recommender: llm_rec_lib.LLMRecommender | None = None,
) -> dict[str, list[transcripts_lib.Transcript]]:
    """`run_dialogues` (same arguments) as transcripts: system name -> S transcripts in sample
    order (`sample_index` is the position here)."""
    dialogues = run_dialogues(
        recommenders,
        specs,
        histories,
        targets,
        keys,
        first_utterances,
        simulator,
        items,
        vocab,
        settings,
        prefetch,
        tracker,
        validator,
        llm_recommender,
    )
    return to_transcripts(specs, dialogues, keys, targets, items, {})
