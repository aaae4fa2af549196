"""Zero-shot evaluation of every trained system on human dialogues (nothing is trained here).

`evaluate(systems, contexts, ...)` scores each context once per system (`batch_size` padded
rows per call, so one compile per system) and ranks its targets in two views, history masked
and unmasked, over all targets and over the strict ones (suggested and liked by the seeker).
The systems are `evaluation.recommenders.load_systems`'s, so every row of the one-turn table
(and any system added there later) is scored; "latentcrs_f" is LatentCRS with the hard filter
(`conversation.filter.hard_filter`, the multi-turn settings' `candidates`) re-ordering the top of
its ranking by the seeker's stated features, the rest refilled in rank order; "latentcrs_v"
re-orders the top `validator_candidates` of that list with a validator
(`conversation/validator.py`): the keyless stand-in (the context text against the candidates'
item texts) or, with `multi_turn.validator="llm"` and an endpoint, the paper's LLM validator,
which reads the earlier messages with their roles. "llm_only" (with an endpoint) is the
zero-shot LLM recommender: the titles it names for the earlier messages, resolved onto the
catalogue, are its ranked list; a target it does not name is a miss, and the masked view drops
the seeker's history from the list.

`run(config, workdir, path, ...)` reads a dialogue file, resolves its mentions, embeds every
context once through the workdir's embedding cache (`embeddings/cache`, as every other text),
evaluates, and writes `<workdir>/eval/dialogues/<name>.{md,json}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.conversation import filter as filter_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.dialogues import metrics as metrics_lib
from latentcrs_jax.dialogues import protocol
from latentcrs_jax.errors import UserInputError

FILTERED = "latentcrs_f"
VALIDATED = "latentcrs_v"
LLM_ONLY = "llm_only"
LABELS = {  # System name -> row label (systems without one show their name).
    FILTERED: "LatentCRS^F (stated features)",
    VALIDATED: "LatentCRS^V (stand-in validator, no LLM)",
    "latentcrs": "LatentCRS (prior mixture)",
    "posterior": "posterior q(m|u)",
    "backbone": "backbone SASRec (mention history)",
    "fusion": "joint fusion (no EM)",
    "late_fusion": "late fusion (backbone + text, weights fit on valid)",
    "no_kl": "ablation: no KL",
    "no_rec": "ablation: no aux rec loss",
    "text": "text-only retrieval",
    "popularity": "popularity",
    LLM_ONLY: "LLM only (zero-shot)",
}
VIEWS = ("masked", "unmasked")


class DialogueEvalError(UserInputError, ValueError):
    """The dialogues cannot be evaluated (untrained workdir, no context)."""


def _ranks_for_batch(
    name: str,
    scores: np.ndarray,
    batch: Sequence[protocol.Context],
    history: np.ndarray,
    vocab: FeatureVocab | None,
    has_title: Callable[[int], bool],
    candidates: int,
    mask: bool,
    validator: Any = None,
    validator_candidates: int = 20,
    texts: Sequence[str] = (),
) -> list[list[int]]:
    targets = [c.targets for c in batch]
    if name not in (FILTERED, VALIDATED):
        return metrics_lib.target_ranks(scores, history, targets, mask)
    top = max(metrics_lib.KS)
    pool = filter_lib.rank_items(scores, history, candidates + top, mask)
    lists = [
        filter_lib.hard_filter(
            ranked,
            vocab.features_of,
            c.included,
            c.excluded,
            top_k=top,
            candidates=candidates,
            has_title=has_title,
        )
        for c, ranked in zip(batch, pool)
    ]
    if name == VALIDATED:  # The validator re-orders ^F's top N; the rest stays in ^F's order.
        n = validator_candidates
        turns = [c.chat_turns() for c in batch]
        done = validator.rerank_many(turns, [x[:n] for x in lists], texts)
        lists = [r.order + x[n:] for r, x in zip(done, lists)]
    return [metrics_lib.list_ranks(x, c.targets) for x, c in zip(lists, batch)]


def _llm_only_ranks(
    llm_recommender: Any, batch: Sequence[protocol.Context]
) -> dict[str, list[list[int]]]:
    """Per view, the target ranks in the LLM-only lists of a batch (one request per context)."""
    found = llm_recommender.recommend_many([c.chat_turns() for c in batch])
    out: dict[str, list[list[int]]] = {view: [] for view in VIEWS}
    for c, result in zip(batch, found):
        seen = set(c.history)
        for view in VIEWS:
            shown = [i for i in result.items if view != "masked" or i not in seen]
            out[view].append(metrics_lib.list_ranks(shown, c.targets))
    return out


def evaluate(
    systems: Mapping[str, Any],
    contexts: Sequence[protocol.Context],
    history_len: int,
    vocab: FeatureVocab | None = None,
    has_title: Callable[[int], bool] = lambda i: True,
    batch_size: int = 256,
    candidates: int = 50,
    validator: Any = None,
    validator_candidates: int = 20,
    llm_recommender: Any = None,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, float]]:
    """Scores every context with every system.

    Args:
      systems: name -> `Recommender` (score(int32[B, H], texts) -> float[B, N+1]); with a
        "latentcrs" system and a `vocab`, LatentCRS^F is scored too.
      contexts: the ranking contexts.
      history_len: H.
      vocab: the feature vocabulary (for LatentCRS^F).
      has_title: item id -> whether it can be shown (the hard filter drops the others).
      batch_size: contexts per scoring call.
      candidates: top of the ranking the hard filter re-orders.
      validator: with one (`conversation.validator.StandInValidator` or `LLMValidator`),
        LatentCRS^V re-orders the top `validator_candidates` of LatentCRS^F's list by it.
      llm_recommender: with one (`conversation.llm_recommender.LLMRecommender`), the
        "llm_only" row.

    Returns:
      ({system: {"<view>" / "<view>_strict": metrics}}, {system: seconds}), views "masked" and
      "unmasked"; metrics as `metrics.summarise`.
    """
    names = list(systems)
    if "latentcrs" in systems and vocab is not None:
        names.append(FILTERED)
        if validator is not None:
            names.append(VALIDATED)
    if llm_recommender is not None:
        names.append(LLM_ONLY)
    order = list(LABELS)  # The one-turn table's order; systems without a label come last.
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    history = protocol.history_matrix(contexts, history_len)
    strict = np.array([s for c in contexts for s in c.strict], dtype=bool)
    results, seconds = {}, {}
    for name in names:
        rec = systems.get("latentcrs" if name in (FILTERED, VALIDATED) else name)
        start = time.perf_counter()
        ranks: dict[str, list[int]] = {v: [] for v in VIEWS}
        for lo in range(0, len(contexts), batch_size):
            batch = contexts[lo : lo + batch_size]
            if name == LLM_ONLY:
                for view, rows in _llm_only_ranks(llm_recommender, batch).items():
                    ranks[view] += [r for row in rows for r in row]
                continue
            h = history[lo : lo + batch_size]
            n = len(batch)
            texts = [c.text for c in batch]
            if n < batch_size:  # Fixed shapes: one compile per system.
                h = np.concatenate([h, np.zeros((batch_size - n, h.shape[1]), h.dtype)])
                texts += [""] * (batch_size - n)
            scores = np.asarray(rec.score(h, texts))[:n]
            for view in VIEWS:
                rows = _ranks_for_batch(
                    name,
                    scores,
                    batch,
                    h[:n],
                    vocab,
                    has_title,
                    candidates,
                    view == "masked",
                    validator,
                    validator_candidates,
                    texts[:n],
                )
                ranks[view] += [r for row in rows for r in row]
        seconds[name] = time.perf_counter() - start
        results[name] = {}
        for view in VIEWS:
            r = np.asarray(ranks[view], dtype=np.int64)
            results[name][view] = metrics_lib.summarise(r)
            results[name][f"{view}_strict"] = metrics_lib.summarise(r[strict])
        logging.info(
            "dialogues: %s scored %d contexts in %.1fs", name, len(contexts), seconds[name]
        )
    return results, seconds
