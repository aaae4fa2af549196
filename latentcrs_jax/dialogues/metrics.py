"""Ranks of dialogue targets and the CRS metrics: Recall@1/10/50 and NDCG@10.

Every target is one sample (a message recommending two movies gives two), as in the CRS
literature. A target's 0-based rank over all item ids, PAD never ranked and the history masked
in the masked view, uses `evaluation/ranking.py`'s tie rule (the lower id first among equal
scores): `#{j : s_j > s_t} + #{j < t : s_j == s_t}` over unmasked ids with finite scores. A
target whose score is masked or not finite is a miss (rank `MISS`). With the hard filter
(LatentCRS^F) the rank is the target's position in the filtered list, a miss past its end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

KS = (1, 10, 50)
NDCG_K = 10
METRICS = tuple(f"recall@{k}" for k in KS) + (f"ndcg@{NDCG_K}",)
MISS = np.iinfo(np.int64).max


def masked_scores(scores: np.ndarray, history: np.ndarray | None, mask_history: bool) -> np.ndarray:
    """float32[B, N+1] copy with PAD, non-finite scores and (optionally) the history at -inf."""
    s = np.array(scores, dtype=np.float32, copy=True)
    s[~np.isfinite(s)] = -np.inf
    s[:, 0] = -np.inf
    if mask_history and history is not None and history.size:
        rows = np.repeat(np.arange(s.shape[0]), history.shape[1])
        s[rows, np.asarray(history).reshape(-1)] = -np.inf
        s[:, 0] = -np.inf
    return s


def target_ranks(
    scores: np.ndarray,
    history: np.ndarray | None,
    targets: Sequence[Sequence[int]],
    mask_history: bool = True,
) -> list[list[int]]:
    """0-based rank of every target of every row (`MISS` when it cannot be ranked).

    Args:
      scores: float[B, N+1] raw scores (column 0 is PAD).
      history: int[B, H] 0-padded item ids to mask.
      targets: B lists of target ids.
      mask_history: never rank the history.
    """
    s = masked_scores(scores, history, mask_history)
    ids = np.arange(s.shape[1])
    out = []
    for row, row_targets in zip(s, targets):
        ranks = []
        for t in row_targets:
            st = row[t]
            if not np.isfinite(st):
                ranks.append(MISS)
                continue
            ranks.append(int((row > st).sum() + ((row == st) & (ids < t)).sum()))
        out.append(ranks)
    return out


def list_ranks(shown: Sequence[int], targets: Sequence[int]) -> list[int]:
    """Rank of each target in a ranked list (`MISS` when absent)."""
    pos = {int(i): n for n, i in reversed(list(enumerate(shown)))}
    return [pos.get(int(t), MISS) for t in targets]


def summarise(ranks: Sequence[int]) -> dict[str, float]:
    """Recall@1/10/50 and NDCG@10 over target ranks (NaN when there are none), plus "targets"."""
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {"targets": int(r.size)}
    if not r.size:
        return {**out, **{m: float("nan") for m in METRICS}}
    for k in KS:
        out[f"recall@{k}"] = float((r < k).mean())
    gain = np.where(r < NDCG_K, 1.0 / np.log2(np.minimum(r, NDCG_K) + 2.0), 0.0)
    out[f"ndcg@{NDCG_K}"] = float(gain.mean())
    return out
