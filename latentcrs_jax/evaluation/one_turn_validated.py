"""One-turn rows of LatentCRS^V: a validator re-ranks the top N of the prior's test ranking.

In the one-turn protocol the dialogue is the first utterance and nothing is filtered, so ^V
re-ranks the top N (`multi_turn.validator_candidates`) of the LatentCRS prior's full ranking
(history masked as in the other rows; items `em.eval_item_chunk` at a time when set) and
HIT/NDCG@5..20 are read from that list (past N the prior's order stands). The prior scores
the test split with the encode stage's utterance embeddings, as the trained rows do.
* The keyless stand-in (`conversation/validator.py`, the default), every EM seed: its text
  similarity is the cosine between the utterance embedding and each item-text embedding. With
  `validator_standin_weight = 1` it reproduces the prior's row.
* The LLM validator (`multi_turn.validator="llm"`), the first EM seed only (one request per
  test sample; `<workdir>/eval/one_turn_validator_cache.jsonl` makes a re-run free).
The evaluate stage runs on every pipeline run, so the rows are kept in
`<workdir>/eval/one_turn_validated.json` with a fingerprint of what they depend on (the
encode, pretrain and EM stages, the seeds and the ^V settings) and recomputed only when it
changes.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.conversation import llm_endpoint
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.evaluation import ranking
from latentcrs_jax.text import stage as encode_stage

KMAX = max(ranking.DEFAULT_KS)


def top_lists(
    scores: np.ndarray, history: np.ndarray, k: int, mask_history: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """int32[B, k] ids and float32[B, k] masked scores, best first (the metrics' tie rule)."""
    masked = ranking.mask_scores(
        jnp.asarray(scores, jnp.float32), history, mask_history=mask_history
    )
    top_scores, top_ids = jax.lax.top_k(masked, k)
    return np.asarray(top_ids), np.asarray(top_scores)


def rerank_top(
    top_ids: np.ndarray,
    top_scores: np.ndarray,
    n: int,
    order_fn: Callable[[int, list[int]], list[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """Re-orders the first `n` finite entries of each row with `order_fn(row, ids) -> ids`."""
    ids, sc = top_ids.copy(), top_scores.copy()
    for b in range(ids.shape[0]):
        m = int(min(n, np.isfinite(sc[b]).sum()))
        if m < 2:
            continue
        new = order_fn(b, [int(i) for i in ids[b, :m]])
        pos = {int(i): p for p, i in enumerate(ids[b, :m])}
        perm = [pos[i] for i in new]
        ids[b, :m], sc[b, :m] = ids[b, perm], sc[b, perm]
    return ids, sc


def metrics(top_ids: np.ndarray, top_scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """HIT/NDCG@5..20 means of ranked lists."""
    sums = ranking.metrics_from_top_k(jnp.asarray(top_ids), jnp.asarray(top_scores), target)
    return {k: float(s) / max(float(c), 1.0) for k, (s, c) in sums.items()}


def _prior_lists(config, workdir, seed: int, x: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """The LatentCRS prior's top-k test lists for one EM seed (None when it was not trained)."""
    from latentcrs_jax.evaluation import recommenders

    lookup = lambda rows: x[np.asarray([int(r) for r in rows], np.int64)]  # noqa: E731
    systems, ctx = recommenders.load_systems(config, workdir, seed, wrap_embed=lambda e: lookup)
    if "latentcrs" not in systems:
        return None
    test = ctx.dataset.splits["test"]
    system, mask = systems["latentcrs"], bool(config.em.mask_history)
    chunk = int(config.em.eval_item_chunk)
    ids, scs = [], []
    batch = 256
    for start in range(0, len(test), batch):
        rows = list(range(start, min(start + batch, len(test))))
        pad = batch - len(rows)
        h = np.asarray(test.history[rows])
        hp = np.concatenate([h, np.zeros((pad, h.shape[1]), h.dtype)]) if pad else h
        texts = [str(r) for r in rows] + ["0"] * pad
        if chunk:  # items `chunk` at a time (em.eval_item_chunk); -inf entries never count
            i, t = (a[: len(rows)] for a in system.ranker.top_k(hp, texts, k, chunk, mask))
        else:
            i, t = top_lists(np.asarray(system.score(hp, texts))[: len(rows)], h, k, mask)
        ids.append(i)
        scs.append(t)
    return np.concatenate(ids), np.concatenate(scs), np.asarray(test.target), ctx


def rows(config, workdir: str | pathlib.Path) -> dict[str, dict[str, list[float]]]:
    """{label: {metric: [value per seed]}} of the ^V rows (empty without a trained prior).

    The stand-in needs item-text embeddings of the utterance's dimension; the LLM row needs
    `multi_turn.validator="llm"` and its endpoint.
    """
    from latentcrs_jax.conversation import multi_turn

    workdir = pathlib.Path(workdir)
    settings = multi_turn.MultiTurnSettings.from_config(config.multi_turn)
    if "latentcrs" not in tuple(config.em_plans) or "latentcrs_v" not in settings.systems:
        return {}
    try:
        x = encode_stage.load(workdir, "test")
        items = encode_stage.load(workdir, "items")
    except FileNotFoundError:
        return {}
    cache = workdir / "eval" / "one_turn_validated.json"
    fp = _fingerprint(config, workdir, settings)
    if cache.is_file():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == fp:
            return saved["rows"]
    out = _compute(config, workdir, settings, x, items)
    fileio.write_json(cache, {"fingerprint": fp, "rows": out})
    return out


def _fingerprint(config, workdir: pathlib.Path, settings) -> str:
    from latentcrs_jax.training import em_stage
    from latentcrs_jax.training.pretrain import stage as pretrain_stage

    dirs = {"embeddings": encode_stage.stage_dir(workdir)}
    dirs["pretrain"] = pretrain_stage.stage_dir(workdir)
    for seed in config.em_seeds:
        dirs[f"em{seed}"] = em_stage.stage_dir(workdir) / f"seed{seed}" / "em"
    upstream = {
        name: stage_manifest.content_hash(d) if stage_manifest.read(d) is not None else None
        for name, d in dirs.items()
    }
    endpoint = settings.endpoint()
    return stage_manifest.fingerprint(
        upstream=upstream,
        seeds=list(config.em_seeds),
        mask_history=bool(config.em.mask_history),
        validator=settings.validator,
        candidates=settings.validator_candidates,
        weight=settings.validator_standin_weight,
        endpoint=[endpoint.base_url, endpoint.model, endpoint.temperature, endpoint.max_tokens]
        if settings.validator == "llm"
        else None,
    )


def _compute(config, workdir: pathlib.Path, settings, x, items) -> dict:
    n = settings.validator_candidates
    k = max(KMAX, n)
    out: dict[str, dict[str, list[float]]] = {}
    standin_label = f"LatentCRS^V, stand-in validator (no LLM), top {n}"
    standin = None
    if x.shape[1] == items.shape[1]:
        standin = validator_lib.StandInValidator(None, items, settings.validator_standin_weight)

    def by_standin(b: int, cands: list[int]) -> list[int]:
        sc = standin.scores(x[b], cands)
        return [cands[p] for p in sorted(range(len(cands)), key=lambda p: (-sc[p], p))]

    for s, seed in enumerate(config.em_seeds):
        lists = _prior_lists(config, workdir, seed, x, k)
        if lists is None:
            return out
        ids, scs, target, ctx = lists
        if standin is not None:
            for m, v in metrics(*rerank_top(ids, scs, n, by_standin), target).items():
                out.setdefault(standin_label, {}).setdefault(m, []).append(v)
        if s == 0 and settings.validator == "llm":
            label, values = _llm_row(settings, workdir, ctx, ids, scs, target, n, seed)
            out[label] = {m: [v] for m, v in values.items()}
    return out


def _llm_row(settings, workdir: pathlib.Path, ctx, ids, scs, target, n, seed) -> tuple:
    """The LLM validator's one-turn metrics on the first seed's lists."""
    from latentcrs_jax.simulator import stage as simulate_stage

    texts = simulate_stage.load_texts(workdir, "test")
    client = llm_endpoint.make_client(
        settings.endpoint(), workdir / "eval" / "one_turn_validator_cache.jsonl"
    )
    ds = ctx.dataset
    v = validator_lib.LLMValidator(ds.items, ds.domain, client)
    cands = [
        [int(i) for i, s in zip(ids[b, :n], scs[b, :n]) if np.isfinite(s)] for b in range(len(ids))
    ]
    results = v.rerank_many([[{"role": "user", "text": t}] for t in texts], cands)
    orders = [r.order for r in results]
    values = metrics(*rerank_top(ids, scs, n, lambda b, c: orders[b]), target)
    logging.info("one-turn LLM validator: %s, %s", v.summary(), client.usage_total)
    return f"LatentCRS^V, {v.label}, top {n} (EM seed {seed})", values
