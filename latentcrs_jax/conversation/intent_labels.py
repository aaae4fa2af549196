"""Readable intent labels: the coarse features (genres or categories, a decade) that an
intent's nearest items share more often than the catalogue does, with two example titles."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latentcrs_jax.conversation import filter as filter_lib
from latentcrs_jax.conversation.features import FeatureVocab


def intent_labels(
    intents: np.ndarray,
    item_emb: np.ndarray,
    items: Sequence[Mapping[str, Any]],
    vocab: FeatureVocab,
    top_items: int = 50,
) -> tuple[list[str], np.ndarray]:
    """A readable label per intent and the intent-item affinities.

    Args:
      intents: float[K, D] intent vectors c_m.
      item_emb: float[N+1, D] item embeddings (row 0 = PAD).
      items: the items table.
      vocab: its feature vocabulary.
      top_items: items per intent the label is computed from.

    Returns:
      (K labels, float32[K, N+1] affinities c_m . e_y with PAD at -inf).
    """
    affinity = np.asarray(intents, np.float32) @ np.asarray(item_emb, np.float32).T
    affinity[:, 0] = -np.inf
    n = affinity.shape[1] - 1
    k = max(1, min(top_items, n))
    coarse = lambda f: f[0] in ("genre", "category", "decade")  # noqa: E731
    overall = collections.Counter(
        f for i in range(1, n + 1) for f in vocab.features_of(i) if coarse(f)
    )
    labels = []
    for row in affinity:
        top = np.argsort(-row, kind="stable")[:k]
        counts = collections.Counter(f for i in top for f in vocab.features_of(int(i)) if coarse(f))
        scored = []
        for f, c in counts.items():
            lift = (c / k) / (overall[f] / n)
            if c >= 2 and lift > 1.0:
                scored.append((c / k * math.log(lift), f))
        best = [f for _, f in sorted(scored, key=lambda x: (-x[0], x[1]))]
        genres = [vocab.label(f) for f in best if f[0] != "decade"][:3]
        decades = [vocab.label(f) for f in best if f[0] == "decade"][:1]
        examples = [filter_lib.item_title(items[int(i)]) for i in top[:2]]
        label = ", ".join(genres + decades) or "mixed"
        labels.append(f"{label} (e.g. {'; '.join(examples)})")
    return labels, affinity
