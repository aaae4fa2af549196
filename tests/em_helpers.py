"""Synthetic EM inputs for tests: a tiny world where behaviour and text both carry the intent."""

import numpy as np

from latentcrs_jax.training import em, em_data

K, D, DX, N, NEG = 4, 8, 6, 40, 5


def synthetic_inputs(seed: int = 0, sizes=(96, 96, 96)):
    """Returns (splits, item_emb [N+1, D], intents [K, D])."""
    rng = np.random.default_rng(seed)
    intents = rng.normal(size=(K, D)).astype(np.float32)
    intents /= np.linalg.norm(intents, axis=1, keepdims=True)
    item_intent = rng.integers(0, K, N + 1)
    item_emb = (intents[item_intent] + 0.3 * rng.normal(size=(N + 1, D))).astype(np.float32)
    text_proj = rng.normal(size=(K, DX)).astype(np.float32)
    splits = {}
    for name, s in zip(("train", "valid", "test"), sizes):
        m = rng.integers(0, K, s)
        h = (intents[m] + 0.5 * rng.normal(size=(s, D))).astype(np.float32)
        x = (text_proj[m] + 0.5 * rng.normal(size=(s, DX))).astype(np.float32)
        target = np.array([rng.choice(np.flatnonzero(item_intent[1:] == k)) + 1 for k in m])
        history = rng.integers(1, N + 1, size=(s, 6)).astype(np.int32)
        history[:, :2] = 0
        negs = rng.integers(1, N + 1, size=(s, NEG)).astype(np.int32)
        splits[name] = em_data.SplitArrays(
            h=h,
            x=x,
            history=history,
            target=target.astype(np.int32),
            candidates=np.concatenate([target[:, None], negs], axis=1).astype(np.int32),
            user=np.arange(s, dtype=np.int32),
        )
    return splits, item_emb, intents


def small_config(**overrides) -> em.EMConfig:
    base = dict(
        batch_size=16,
        eval_batch_size=16,
        text_hidden=16,
        max_epochs=3,
        learning_rate=3e-2,
        patience=5,
        m_nce_weight=1.0,
    )
    base.update(overrides)
    return em.EMConfig(**base)
