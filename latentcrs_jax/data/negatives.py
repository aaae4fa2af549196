"""Sampled negatives for the EM stage: 10 per sample, reproducible from a seed, no cache file.

Negatives are uniform without replacement over the real items 1..N minus an exclusion set:
the user's whole sequence (default), or, with `faithful_negatives`, only the sample's own
history and target (the authors' behaviour, docs/method.md 3.1 and 7.11, which lets a user's
future items appear as negatives).
"""

import numpy as np

from latentcrs_jax.data.errors import DataError


def sample_negatives(
    users: np.ndarray,
    histories: np.ndarray,
    targets: np.ndarray,
    sequences: list[np.ndarray],
    num_items: int,
    num_negatives: int,
    seed: int,
    faithful: bool = False,
) -> np.ndarray:
    """Draws negatives for every sample.

    Args:
      users: int32[S] user index of each sample.
      histories: int32[S, H] left-padded histories.
      targets: int32[S].
      sequences: each user's full item sequence.
      num_items: N; items are 1..N.
      num_negatives: negatives per sample.
      seed: seed of the numpy generator (one stream over the samples in order).
      faithful: exclude only history + target instead of the user's whole sequence.

    Returns:
      int32[S, num_negatives], each row distinct items, none excluded for its sample.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((len(targets), num_negatives), np.int32)
    for s in range(len(targets)):
        if faithful:
            excluded = set(histories[s][histories[s] > 0].tolist()) | {int(targets[s])}
        else:
            excluded = set(sequences[users[s]].tolist())
        if num_items - len(excluded) < num_negatives:
            raise DataError(
                f"sample {s} (user {users[s]}) leaves only {num_items - len(excluded)} "
                f"candidate negatives; {num_negatives} are needed"
            )
        picked: list[int] = []
        while len(picked) < num_negatives:
            for item in rng.integers(1, num_items + 1, size=2 * num_negatives).tolist():
                if item not in excluded:
                    excluded.add(item)
                    picked.append(item)
                    if len(picked) == num_negatives:
                        break
        out[s] = picked
    return out
