"""Host data of backbone training: ICLRec's cut points, left padding, length buckets and the
BCE loss's negatives.

Memory is O(interactions): the model inputs are users x L, and the two arrays whose width is
a user's whole history (the augmentation source S[:-3] and the eval splits' masked prefixes)
are stored ragged (`data.ragged.Ragged`) and left-padded per batch by `task.PretrainTask`.

Data (docs/method.md section 1.4, ICLRec `datasets.py`): one training sample per user, input
S[:-3] with next-item targets S[1:-2] at every position; valid input S[:-2] -> S[-2]; test
input S[:-1] -> S[-1]; inputs keep their last `max_len` items, left-padded. Evaluation ranks all
items with the user's whole input prefix masked (ICLRec masks the train items too, with score 0
instead of -inf).

Negatives for the BCE loss are drawn on the host with numpy: uniform over 1..N, rejected and
redrawn while they fall in the user's *whole* sequence (as `utils.py:neg_sample`), from a
generator seeded by (seed, epoch), so an epoch's negatives are reproducible after a resume.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from latentcrs_jax.data.ragged import Ragged


def left_pad(seqs: Sequence[np.ndarray], width: int) -> np.ndarray:
    """Keeps the last `width` items of each sequence and left-pads with 0.

    Args:
      seqs: S int arrays of any lengths.
      width: output width.

    Returns:
      int32[S, width].
    """
    out = np.zeros((len(seqs), width), np.int32)
    for r, s in enumerate(seqs):
        s = np.asarray(s)[-width:] if width else np.zeros(0, np.int32)
        if len(s):
            out[r, width - len(s) :] = s
    return out


@dataclasses.dataclass(frozen=True)
class SequenceData:
    """The three splits: model inputs left-padded to L, whole histories ragged.

    Attributes:
      num_items: N.
      train_users: int32[T] users with a training sample (len(S) >= 4).
      train_input: int32[T, L] S[:-3].
      train_target: int32[T, L] S[1:-2], aligned with train_input.
      train_full: T ragged rows, the last `full_width` items of S[:-3] (augmentation source).
      full_width: W >= L, the augmentation source's width (the longest S[:-3], or
        `augment_window`); batches of `train_full` are left-padded to W.
      eval: split -> dict(user int32[E], input int32[E, L], target int32[E], exclude: E
        ragged rows, the whole input prefix) for "valid" (S[:-2] -> S[-2]) and "test"
        (S[:-1] -> S[-1]).
      user_item_keys: int64 sorted user * (N + 1) + item over whole sequences (negatives).
    """

    num_items: int
    train_users: np.ndarray
    train_input: np.ndarray
    train_target: np.ndarray
    train_full: Ragged
    full_width: int
    eval: dict
    user_item_keys: np.ndarray


def training_users(sequences: Sequence[np.ndarray]) -> np.ndarray:
    """int32[T]: the users with a training sample (4+ items): the points K-means clusters."""
    return np.array([u for u, s in enumerate(sequences) if len(s) >= 4], np.int32)


def build_sequence_data(
    sequences: Sequence[np.ndarray], num_items: int, max_len: int, augment_window: int = 0
) -> SequenceData:
    """Builds the ICLRec splits from per-user time-ordered sequences.

    Args:
      sequences: U int arrays, user u's items 1..N in time order.
      num_items: N.
      max_len: L, model input length.
      augment_window: width of the augmentation source; 0 = the longest S[:-3] (authors).

    Returns:
      The padded and ragged arrays.
    """
    seqs = [np.asarray(s, np.int64) for s in sequences]
    for u, s in enumerate(seqs):
        if len(s) and (s.min() < 1 or s.max() > num_items):
            raise ValueError(f"user {u} has item ids outside 1..{num_items}")
    train_users = training_users(seqs)
    if len(train_users) == 0:
        raise ValueError("no user has the 4+ items needed for a training sample")
    train_in = [seqs[u][:-3] for u in train_users]
    longest = max(len(s) for s in train_in)
    width = max(max_len, longest if augment_window <= 0 else min(augment_window, longest))
    evals = {}
    for split, cut in (("valid", 2), ("test", 1)):
        users = np.array([u for u, s in enumerate(seqs) if len(s) >= cut + 1], np.int32)
        prefixes = [seqs[u][:-cut] for u in users]
        evals[split] = {
            "user": users,
            "input": left_pad(prefixes, max_len),
            "target": np.array([seqs[u][-cut] for u in users], np.int32),
            "exclude": Ragged.from_rows(prefixes),
        }
    keys = np.concatenate(
        [u * (num_items + 1) + np.unique(s) for u, s in enumerate(seqs) if len(s)]
    )
    return SequenceData(
        num_items=num_items,
        train_users=train_users,
        train_input=left_pad(train_in, max_len),
        train_target=left_pad([seqs[u][1:-2] for u in train_users], max_len),
        train_full=Ragged.from_rows(train_in, keep_last=width),
        full_width=width,
        eval=evals,
        user_item_keys=np.sort(keys),
    )


def bucket_width(inputs: np.ndarray, buckets: int) -> int:
    """Columns a batch of left-padded rows needs: the longest row rounded up to a multiple of
    L / buckets (so at most `buckets` widths, one compilation each); L when buckets is 0."""
    seq_len = inputs.shape[1]
    if not buckets:
        return seq_len
    step = -(-seq_len // buckets)
    longest = int((inputs > 0).sum(1).max()) if len(inputs) else 1
    return min(seq_len, -(-max(longest, 1) // step) * step)


def sample_negatives(
    rng: np.random.Generator,
    users: np.ndarray,
    shape: tuple[int, ...],
    num_items: int,
    user_item_keys: np.ndarray,
    max_rounds: int = 1000,
) -> np.ndarray:
    """Uniform item ids in 1..N outside each row's user sequence (rejection sampling).

    Args:
      rng: numpy generator.
      users: int[B] user of each row.
      shape: (B, ...) output shape.
      num_items: N.
      user_item_keys: sorted int64 keys user * (N + 1) + item of consumed items.
      max_rounds: give up (ValueError) after this many redraw rounds.

    Returns:
      int32[shape].
    """
    out = rng.integers(1, num_items + 1, size=shape)
    row_user = np.broadcast_to(
        np.asarray(users, np.int64).reshape((-1,) + (1,) * (len(shape) - 1)), shape
    )
    todo = np.ones(shape, bool)
    for _ in range(max_rounds):
        keys = row_user[todo] * (num_items + 1) + out[todo]
        pos = np.searchsorted(user_item_keys, keys)
        hit = user_item_keys[np.minimum(pos, len(user_item_keys) - 1)] == keys
        idx = np.nonzero(todo)
        todo = np.zeros(shape, bool)
        todo[tuple(i[hit] for i in idx)] = True
        if not todo.any():
            return out.astype(np.int32)
        out[todo] = rng.integers(1, num_items + 1, size=int(todo.sum()))
    raise ValueError("negative sampling did not converge: a user has consumed (almost) all items")
