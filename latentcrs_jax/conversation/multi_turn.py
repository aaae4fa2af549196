"""Multi-turn evaluation (method.md 5): simulated dialogues, success rate and average turns.

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
(padded, so one compile per system). Outputs of `run`: `<workdir>/eval/multi_turn.json`,
`multi_turn.md`, `transcripts/<system>.jsonl`, and the stage manifest in `eval/multi_turn/`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.conversation import costs as costs_lib
from latentcrs_jax.conversation import filter as filter_lib
from latentcrs_jax.conversation import llm_endpoint, llm_tracker
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import transcripts as transcripts_lib
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.state import RANKING_TEXTS, ConversationState
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.simulator.state import DialogueState, Utterance, history_ids
from latentcrs_jax.simulator.tokens import TokenUsage


class MultiTurnConfigError(UserInputError, ValueError):
    """A bad `config.multi_turn` field."""


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """A row of the table: which recommender, and whether the hard filter re-orders it."""

    name: str  # Row key, also the transcript file name.
    label: str  # Row label.
    recommender: str  # Key into `recommenders.load_systems(...)[0]`.
    hard_filter: bool  # LatentCRS^F-style filter on the top candidates.
    uses_text: bool = True  # False: the recommender ignores the dialogue.
    validate: bool = False  # LatentCRS^V: a validator re-ranks ^F's top candidates.
    tracked: bool = True  # False: the state tracker never reads its dialogues (LLM-only).


LLM_ONLY = "llm"  # The recommender key of the LLM-only baseline (no trained model).


SYSTEM_SPECS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec("latentcrs_f", "LatentCRS^F", "latentcrs", True),
        SystemSpec("latentcrs", "LatentCRS (no filter)", "latentcrs", False),
        SystemSpec("backbone", "backbone SASRec (text ignored)", "backbone", False, False),
        SystemSpec("text_f", "text-only retrieval + filter", "text", True),
        SystemSpec("fusion_f", "joint fusion (no EM) + filter", "fusion", True),
        SystemSpec("late_fusion_f", "late fusion + filter", "late_fusion", True),
        SystemSpec("latentcrs_v", "LatentCRS^V", "latentcrs", True, validate=True),
        SystemSpec("llm_only", "LLM only (zero-shot)", LLM_ONLY, False, False, tracked=False),
    )
}


@dataclasses.dataclass(frozen=True)
class MultiTurnSettings:
    """Typed mirror of `config.multi_turn` (field comments live in configs/base.py)."""

    num_samples: int = 500
    rounds: int = 5
    top_k: int = 5
    candidates: int = 50
    sample_seed: int = 1024
    ranking_text: str = "dialogue"
    transcripts_per_system: int = 5
    systems: tuple[str, ...] = tuple(SYSTEM_SPECS)
    batch_size: int = 256
    faithful_filter_order: bool = False
    state_tracker: str = "rules"
    tracker_base_url: str = ""
    tracker_model: str = ""
    tracker_api_key_env: str = "OPENAI_API_KEY"
    tracker_temperature: float = 0.0
    tracker_max_tokens: int = 512
    tracker_timeout_s: float = 60.0
    tracker_max_retries: int = 5
    tracker_max_concurrency: int = 4
    tracker_max_prompt_features: int = 200
    tracker_excluded_features: bool = True
    tracker_tokenizer: str = ""
    validator: str = "standin"
    validator_candidates: int = 20
    validator_standin_weight: float = 0.5
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_temperature: float = 0.0
    llm_max_tokens: int = 512
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 5
    llm_max_concurrency: int = 4
    llm_tokenizer: str = ""
    llm_only_titles: int = 10
    mask_history: bool = True

    def __post_init__(self):
        if self.ranking_text not in RANKING_TEXTS:
            raise MultiTurnConfigError(
                f"multi_turn.ranking_text must be one of {RANKING_TEXTS}, got {self.ranking_text!r}"
            )
        try:
            self.tracker()
        except llm_tracker.TrackerConfigError as e:
            raise MultiTurnConfigError(str(e)) from e
        if self.ranking_text == "intents" and self.state_tracker != "llm":
            raise MultiTurnConfigError(
                "multi_turn.ranking_text='intents' ranks the LLM tracker's human intents: it "
                "needs multi_turn.state_tracker='llm'"
            )
        for name in (
            "rounds",
            "top_k",
            "candidates",
            "batch_size",
            "validator_candidates",
            "llm_only_titles",
            "llm_max_concurrency",
        ):
            if int(getattr(self, name)) < 1:
                raise MultiTurnConfigError(f"multi_turn.{name} must be >= 1")
        if self.validator not in validator_lib.KINDS:
            raise MultiTurnConfigError(
                f"multi_turn.validator must be one of {validator_lib.KINDS}, got {self.validator!r}"
            )
        if not 0.0 <= self.validator_standin_weight <= 1.0:
            raise MultiTurnConfigError("multi_turn.validator_standin_weight must be in [0, 1]")
        missing = self.endpoint().missing()
        if self.validator == "llm" and missing:
            raise MultiTurnConfigError(
                f"multi_turn.validator='llm' needs {' and '.join(missing)} (an OpenAI-compatible "
                "endpoint, e.g. http://127.0.0.1:8000/v1, and its model)"
            )
        unknown = [s for s in self.systems if s not in SYSTEM_SPECS]
        if unknown:
            raise MultiTurnConfigError(
                f"unknown multi_turn system(s) {unknown}; known: {list(SYSTEM_SPECS)}"
            )

    @classmethod
    def from_config(cls, section: Any, mask_history: bool = True) -> MultiTurnSettings:
        """Builds from a ConfigDict section (or mapping); unknown keys are an error."""
        values = dict(section.items()) if section is not None else {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise MultiTurnConfigError(f"unknown multi_turn field(s) {unknown}; known: {names}")
        values.setdefault("mask_history", bool(mask_history))
        values["systems"] = tuple(values.get("systems", cls.systems))
        return cls(**values)

    def endpoint(self) -> llm_endpoint.EndpointSettings:
        """The endpoint of the LLM validator and the LLM-only baseline (the `llm_*` fields)."""
        names = [f.name for f in dataclasses.fields(llm_endpoint.EndpointSettings)]
        return llm_endpoint.EndpointSettings(**{n: getattr(self, f"llm_{n}") for n in names})

    def tracker(self) -> llm_tracker.TrackerSettings:
        """The state-tracker settings (`state_tracker` and the `tracker_*` fields)."""
        # Every TrackerSettings field but `kind` is the multi_turn field `tracker_<name>`.
        names = [f.name for f in dataclasses.fields(llm_tracker.TrackerSettings)]
        return llm_tracker.TrackerSettings(
            kind=self.state_tracker,
            **{n: getattr(self, f"tracker_{n}") for n in names if n != "kind"},
        )


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
    recommender, histories: np.ndarray, texts: Sequence[str], batch_size: int, k: int, mask: bool
) -> list[list[int]]:
    """Ranked ids (top k) of each row, scoring `batch_size` padded rows per call."""
    out: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        h = histories[start : start + batch_size]
        t = list(texts[start : start + batch_size])
        n = len(t)
        if n < batch_size:
            h = np.concatenate([h, np.zeros((batch_size - n, h.shape[1]), h.dtype)])
            t += [""] * (batch_size - n)
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


def _transcripts(
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
    return _transcripts(specs, dialogues, keys, targets, items, {})


def to_markdown(results: Mapping[str, Mapping[str, Any]], rounds: int) -> str:
    """The table: one row per system, SR@1..SR@R and AT."""
    head = [f"SR@{r}" for r in range(1, rounds + 1)] + ["AT"]
    lines = ["| system | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in results.values():
        cells = [f"{v:.4f}" for v in row["success_rate"]] + [f"{row['average_turns']:.3f}"]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(
    recommenders: Mapping[str, Any],
    histories: np.ndarray,
    targets: np.ndarray,
    keys: Sequence[str],
    first_utterances: Sequence[Utterance],
    simulator: Any,
    items: Sequence[Mapping[str, Any]],
    domain: str,
    settings: MultiTurnSettings,
    prefetch: Callable[[Sequence[str]], None] | None = None,
    tracker: llm_tracker.LLMStateTracker | None = None,
    validator: Any = None,
    llm_recommender: llm_rec_lib.LLMRecommender | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[transcripts_lib.Transcript]]]:
    """Runs every configured system whose parts exist; returns (results, transcripts).

    `results[name]` is `success_metrics(...)` plus "label", "recommender", "hard_filter" and
    "cost" (`costs.system_costs`: the tokens of its dialogues by role). Systems whose
    recommender is missing (e.g. no fusion run), ^V without a `validator` and the LLM-only
    baseline without an `llm_recommender` (no endpoint) are skipped with a log line. With an
    LLM `tracker`, its vocabulary is the filter's (build it from `items`, `domain`).
    """
    specs = []
    for name in settings.systems:
        spec = SYSTEM_SPECS[name]
        if spec.recommender == LLM_ONLY and llm_recommender is None:
            logging.info(
                "multi-turn: no LLM endpoint (multi_turn.llm_base_url, llm_model); skipping %s",
                name,
            )
        elif spec.validate and validator is None:
            logging.warning("multi-turn: no validator; skipping %s", name)
        elif spec.recommender == LLM_ONLY or spec.recommender in recommenders:
            specs.append(spec)
        else:
            logging.warning("multi-turn: no %r recommender; skipping %s", spec.recommender, name)
    vocab = tracker.vocab if tracker is not None else FeatureVocab(items, domain)
    labels = {s.name: _label(s, validator, llm_recommender) for s in specs}
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
    results = {}
    for spec in specs:
        rows = dialogues[spec.name]
        metrics = success_metrics([d.success_round for d in rows], settings.rounds)
        usage = {
            role: sum((d.usage.get(role, TokenUsage()) for d in rows), TokenUsage())
            for role in costs_lib.ROLES
        }
        turns = sum(d.success_round or settings.rounds for d in rows)
        results[spec.name] = {
            "label": labels[spec.name],
            "recommender": spec.recommender,
            "hard_filter": spec.hard_filter,
            **metrics,
            "cost": costs_lib.system_costs(
                usage, _parts(spec, simulator, tracker, validator), len(rows), turns
            ),
        }
    return results, _transcripts(specs, dialogues, keys, targets, items, labels)


def _label(spec: SystemSpec, validator: Any, llm_recommender: Any) -> str:
    if spec.validate:
        return f"{spec.label}, {validator.label}"
    if spec.recommender == LLM_ONLY:
        return f"{spec.label}, {llm_recommender.client.config.model}"
    return spec.label


def _parts(spec: SystemSpec, simulator: Any, tracker: Any, validator: Any) -> dict[str, str]:
    """Which parts of a system call an LLM (costs.LLM), run without one, or do not exist."""
    llm, keyless, absent = costs_lib.LLM, costs_lib.KEYLESS, costs_lib.ABSENT
    return {
        "simulator": llm if getattr(simulator, "client", None) is not None else keyless,
        "tracker": absent if not spec.tracked else (llm if tracker is not None else keyless),
        "validator": (
            absent if not spec.validate else (llm if validator.kind == "llm" else keyless)
        ),
        "recommender": llm if spec.recommender == LLM_ONLY else keyless,
    }


def write_outputs(
    out_dir: str | pathlib.Path,
    results: Mapping[str, Any],
    dialogues: Mapping[str, Sequence[transcripts_lib.Transcript]],
    settings: MultiTurnSettings,
    header: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Writes `multi_turn.json`, `multi_turn.md` and `transcripts/*.jsonl`; returns the table."""
    out_dir = pathlib.Path(out_dir)
    for name, rows in dialogues.items():
        transcripts_lib.write_transcripts(
            out_dir / "transcripts" / f"{name}.jsonl", list(rows)[: settings.transcripts_per_system]
        )
    fileio.write_json(
        out_dir / "multi_turn.json",
        {"settings": stage_manifest.to_plain(dataclasses.asdict(settings)), "systems": results}
        | dict(extra or {}),
    )
    md = header + "\n\n" + to_markdown(results, settings.rounds)
    costs = {name: row["cost"] for name, row in results.items() if "cost" in row}
    if costs:
        labels = {name: row["label"] for name, row in results.items()}
        md += "\n\nToken cost per dialogue\n\n" + costs_lib.to_markdown(costs, labels)
    fileio.write_text(out_dir / "multi_turn.md", md + "\n")
    return md


# ----------------------------------------------------------------------------------------------
# Pipeline stage.
# ----------------------------------------------------------------------------------------------


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """Where the stage keeps its manifest (and the LLM simulator's response cache)."""
    return pathlib.Path(workdir) / "eval" / "multi_turn"


def _fingerprint(config, workdir: pathlib.Path, settings: MultiTurnSettings) -> str:
    from latentcrs_jax.data import prepare as prepare_lib
    from latentcrs_jax.simulator import stage as simulate_stage
    from latentcrs_jax.text import stage as encode_stage
    from latentcrs_jax.training import em_stage, pretrain_stage

    seed = config.em_seeds[0]
    dirs = {
        "data": prepare_lib.data_dir(workdir),
        "utterances": simulate_stage.stage_dir(workdir),
        "embeddings": encode_stage.stage_dir(workdir),
        "pretrain": pretrain_stage.stage_dir(workdir),
        "em": em_stage.stage_dir(workdir) / f"seed{seed}" / "em",
        "fusion": em_stage.stage_dir(workdir) / f"seed{seed}" / "fusion",
    }
    upstream = {
        name: (stage_manifest.content_hash(d) if stage_manifest.read(d) is not None else None)
        for name, d in dirs.items()
    }
    return stage_manifest.fingerprint(
        upstream=upstream,
        multi_turn=dataclasses.asdict(settings),
        simulator=simulate_stage.fingerprint_section(config.simulator),
        text=encode_stage.fingerprint_section(config.text),
        em_seed=seed,
    )


def preflight(config) -> MultiTurnSettings:
    """Checks `config.multi_turn`, the LLM endpoints and API keys included; no request.

    Cheap, so a pipeline can call it before its first stage and fail at its start rather than
    after training; `run` calls it first.

    Raises:
      MultiTurnConfigError: a bad field, or the LLM tracker or the LLM validator without
        endpoint or model, or an endpoint's key missing.
    """
    settings = MultiTurnSettings.from_config(
        config.multi_turn, mask_history=bool(config.em.mask_history)
    )
    try:
        llm_tracker.make_client(settings.tracker())
        llm_endpoint.make_client(settings.endpoint())
    except (llm_tracker.TrackerConfigError, llm_endpoint.EndpointConfigError) as e:
        raise MultiTurnConfigError(str(e)) from e
    return settings


def _first_turn_usage(simulator: Any, utt: Utterance, history, target: int) -> Utterance:
    """The first turn with its tokens: as recorded by the simulate stage, else counted."""
    if getattr(simulator, "client", None) is None or utt.usage is not None:
        return utt
    messages = simulator.first_turn_messages(history, int(target))
    return dataclasses.replace(utt, usage=simulator.client.counter.count(messages, utt.text))


def run(config, workdir: str | pathlib.Path) -> str:
    """The multi-turn stage of a trained workdir; skipped when its manifest is complete.

    Returns:
      A header line and the Markdown table (also in `<workdir>/eval/multi_turn.md`).
    """
    from latentcrs_jax.evaluation import recommenders as recommenders_lib
    from latentcrs_jax.simulator import api as simulator_api
    from latentcrs_jax.simulator import stage as simulate_stage

    workdir = pathlib.Path(workdir)
    settings = preflight(config)
    out = stage_dir(workdir)
    fp = _fingerprint(config, workdir, settings)
    md_path = workdir / "eval" / "multi_turn.md"
    if stage_manifest.is_complete(out, fp) and md_path.is_file():
        logging.info("multi-turn: %s is complete; skipping", out)
        return md_path.read_text(encoding="utf-8").rstrip("\n")
    tracker_settings = settings.tracker()
    client = llm_tracker.make_client(tracker_settings, out / "tracker_cache.jsonl")
    endpoint = settings.endpoint()
    validator_client = None
    if settings.validator == "llm" and "latentcrs_v" in settings.systems:
        validator_client = llm_endpoint.make_client(endpoint, out / "validator_cache.jsonl")
    llm_only_client = None
    if "llm_only" in settings.systems:
        llm_only_client = llm_endpoint.make_client(endpoint, out / "llm_only_cache.jsonl")
    systems, ctx = recommenders_lib.load_systems(config, workdir, wrap_embed=EmbeddingMemo)
    memo = ctx.embed  # Every system embeds through this one memo.
    ds = ctx.dataset
    test = ds.splits["test"]
    if len(test) == 0:
        raise MultiTurnConfigError(f"{workdir}: the test split is empty")
    idx = sample_indices(len(test), settings.num_samples, settings.sample_seed)
    utterances = simulate_stage.load_utterances(workdir, "test")
    simulator = simulator_api.make_simulator(
        config.simulator, ds.items, ds.domain, cache_path=out / "llm_cache.jsonl"
    )
    tracker = None
    if client is not None:
        vocab = FeatureVocab(ds.items, ds.domain)
        tracker = llm_tracker.make_tracker(tracker_settings, vocab, ds.domain, client=client)
    validator = None
    if validator_client is not None:
        validator = validator_lib.LLMValidator(ds.items, ds.domain, validator_client)
    elif "latentcrs_v" in settings.systems:
        item_text = getattr(ctx, "item_text_emb", None)
        if item_text is None:
            logging.warning("multi-turn: no item-text embeddings for the stand-in validator")
        else:
            validator = validator_lib.StandInValidator(
                memo, item_text, settings.validator_standin_weight
            )
    llm_only = None
    if llm_only_client is not None:
        llm_only = llm_rec_lib.LLMRecommender(
            ds.items, ds.domain, llm_only_client, settings.llm_only_titles
        )
    firsts = [
        _first_turn_usage(simulator, utterances[i], test.history[i], test.target[i]) for i in idx
    ]
    start = time.perf_counter()
    results, dialogues = evaluate(
        systems,
        test.history[idx],
        test.target[idx],
        [ds.sample_key("test", i) for i in idx],
        firsts,
        simulator,
        ds.items,
        ds.domain,
        settings,
        prefetch=memo.prefetch,
        tracker=tracker,
        validator=validator,
        llm_recommender=llm_only,
    )
    seconds = time.perf_counter() - start
    for rows in dialogues.values():  # Positions -> test-split indices.
        for t in rows:
            t.sample_index = idx[t.sample_index]
    kind = str(config.simulator.kind)
    tracker_name = "rules" if tracker is None else f"LLM ({tracker_settings.model})"
    header = (
        f"Multi-turn results ({len(idx)} test samples, {settings.rounds} rounds, top-"
        f"{settings.top_k} shown, {kind} simulator, {tracker_name} state tracker, ranking "
        f"text: {settings.ranking_text}; {seconds:.0f}s)"
    )
    extra = {"samples": idx, "seconds": seconds, "simulator": kind}
    if tracker is not None:
        extra["state_tracker"] = tracker.summary()
        logging.info("multi-turn state tracker: %s", extra["state_tracker"])
    if validator is not None:
        extra["validator"] = {"kind": validator.kind, **validator.summary()}
        logging.info("multi-turn validator: %s", extra["validator"])
    if llm_only is not None:
        extra["llm_only"] = llm_only.summary()
        logging.info("multi-turn LLM-only baseline: %s", extra["llm_only"])
    md = write_outputs(
        workdir / "eval",
        results,
        dialogues,
        settings,
        header,
        extra=extra,
    )
    stage_manifest.write(out, fp, seconds=seconds, systems=list(results))
    logging.info("multi-turn: %d samples, %d systems in %.1fs", len(idx), len(results), seconds)
    return md
