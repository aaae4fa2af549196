"""Leave-one-out samples with history windows, and segmentation augmentation.

See docs/method.md 1.4-1.5.

For a user sequence S and window W (25):
  train "raw": seg = S[:-2][-W:], valid: seg = S[:-1][-W:], test: seg = S[-W:];
  each sample is (history = seg[:-1], target = seg[-1]), so histories hold at most W-1 items.
Augmentation ("selection", training only), once per seed with Python's `random` exactly as the
authors: `random.seed(seed)`, then for each user in order, R = S[:-2]; users with
len(R) < W/3 are skipped; r = random.randint(W//6, len(R) - W//6) (inclusive);
seg = R[r-W:r] if r >= W else R[:r].
"""

import dataclasses
import random

import numpy as np

SOURCE_RAW = 0  # Sample source code of the leave-one-out training sample.


@dataclasses.dataclass
class RawSamples:
    """Samples of one split before negatives.

    Attributes:
      user: int32[S] user index.
      history: int32[S, W-1] left-padded with 0.
      target: int32[S].
      source: int8[S]; 0 = leave-one-out sample, j = the j-th augmentation seed (1-based).
    """

    user: np.ndarray
    history: np.ndarray
    target: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


class _Builder:
    def __init__(self, width: int):
        self.width = width
        self.user, self.history, self.target, self.source = [], [], [], []

    def add(self, user: int, segment: np.ndarray, source: int) -> None:
        hist = segment[:-1][-self.width :]
        row = np.zeros(self.width, np.int32)
        if len(hist):
            row[-len(hist) :] = hist
        self.user.append(user)
        self.history.append(row)
        self.target.append(int(segment[-1]))
        self.source.append(source)

    def build(self) -> RawSamples:
        return RawSamples(
            np.asarray(self.user, np.int32),
            np.stack(self.history) if self.history else np.zeros((0, self.width), np.int32),
            np.asarray(self.target, np.int32),
            np.asarray(self.source, np.int8),
        )


def build_splits(
    sequences: list[np.ndarray], max_window: int, augment_seeds: tuple[int, ...]
) -> dict[str, RawSamples]:
    """Builds the train (raw + augmented), valid and test samples.

    Args:
      sequences: U arrays int32[n_u], each user's time-ordered items (n_u >= 3).
      max_window: W, the window length including the target.
      augment_seeds: Python `random` seeds of the segmentation passes.

    Returns:
      {"train", "valid", "test"} -> RawSamples; train lists all raw samples first, then each
      seed's pass in order.
    """
    width = max_window - 1
    train, valid, test = _Builder(width), _Builder(width), _Builder(width)
    for u, seq in enumerate(sequences):
        if len(seq) < 3:
            raise ValueError(f"user {u} has {len(seq)} items; leave-one-out needs >= 3")
        train.add(u, seq[:-2][-max_window:], SOURCE_RAW)
        valid.add(u, seq[:-1][-max_window:], 0)
        test.add(u, seq[-max_window:], 0)
    low = max_window // 6
    for j, seed in enumerate(augment_seeds, 1):
        rng = random.Random(seed)
        for u, seq in enumerate(sequences):
            prefix = seq[:-2]
            if len(prefix) < max_window / 3:
                continue
            r = rng.randint(low, len(prefix) - low)
            segment = prefix[r - max_window : r] if r >= max_window else prefix[:r]
            train.add(u, segment, j)
    return {"train": train.build(), "valid": valid.build(), "test": test.build()}
