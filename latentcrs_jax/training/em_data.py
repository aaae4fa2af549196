"""Host-side inputs of the EM stage: frozen user states, candidates and batches.

The backbone is frozen in the EM stage. With its dropout off (the corrected default), each
sample's user state h_u = SASRec(history)[-1] is a constant, so it is computed once here and
every EM step touches only the two small networks. Positions follow pretraining: a history is
right-aligned so its last item sits at position max_len - 1, where pretraining put it
(docs/method.md 7.8 (b)); the authors' batch-dependent positions are the `faithful_backbone` mode,
which runs the backbone (with dropout) inside the step instead.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from latentcrs_jax.models import sasrec


@dataclasses.dataclass(frozen=True)
class SplitArrays:
    """One split's EM inputs, row-aligned.

    Attributes:
      h: float32[S, d] frozen user states.
      x: float32[S, D_x] utterance embeddings.
      history: int32[S, H] left-padded histories.
      target: int32[S].
      candidates: int32[S, 1 + n] target then negatives.
      user: int32[S] user index.
    """

    h: np.ndarray
    x: np.ndarray
    history: np.ndarray
    target: np.ndarray
    candidates: np.ndarray
    user: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def rows(self, index: np.ndarray, keys=None) -> dict[str, np.ndarray]:
        """The rows `index` (int[R]) of the fields `keys` (all fields when None)."""
        names = keys if keys is not None else [f.name for f in dataclasses.fields(self)]
        return {name: getattr(self, name).take(index, axis=0) for name in names}


def right_align(history: np.ndarray, width: int) -> np.ndarray:
    """Left-pads (or left-truncates) int32[S, H] histories to int32[S, width]."""
    s, h = history.shape
    if h >= width:
        return history[:, h - width :]
    return np.concatenate([np.zeros((s, width - h), history.dtype), history], axis=1)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _states(model: sasrec.SASRec, params, ids: jax.Array, right_aligned: bool) -> jax.Array:
    return model.apply(
        params, ids, deterministic=True, right_aligned=right_aligned, method=model.user_state
    )


def user_states(
    model_cfg: sasrec.SASRecConfig,
    params,
    history: np.ndarray,
    *,
    pretrain_positions: bool = True,
    batch_size: int = 512,
) -> np.ndarray:
    """Frozen, dropout-free user states of every history.

    Args:
      model_cfg: the pretrained backbone's config.
      params: its variables.
      history: int32[S, H] left-padded histories.
      pretrain_positions: the positions the items had in pretraining (right-aligned to
        max_len, computed on the H columns only, not padded to max_len); else positions
        0..H-1 as the authors' EM code. (An all-padding row has no meaningful state: it
        attends uniformly over padding, so it depends on the width.)
      batch_size: rows per forward (the last batch is padded).

    Returns:
      float32[S, d].
    """
    model = sasrec.SASRec(model_cfg)
    ids = history
    if history.shape[1] > model_cfg.max_len:
        ids = right_align(history, model_cfg.max_len)  # keeps the last max_len items
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        n = len(chunk)
        if n < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - n, ids.shape[1]), ids.dtype)])
        out.append(_states(model, params, jnp.asarray(chunk), pretrain_positions)[:n])
    return np.asarray(jnp.concatenate(out)) if out else np.zeros((0, model_cfg.hidden), np.float32)


def epoch_order(num_rows: int, batch_size: int, seed: int, epoch: int, phase: int) -> np.ndarray:
    """A permutation of the rows for one pass, wrapped around to a multiple of `batch_size`.

    Every row is seen at least once; the last batch is filled with the first rows of the same
    permutation, so every training batch is full (no padding rows enter a loss).
    """
    order = np.random.default_rng([seed, epoch, phase]).permutation(num_rows)
    fill = -len(order) % batch_size
    return np.concatenate([order, np.resize(order, fill)]) if fill else order
