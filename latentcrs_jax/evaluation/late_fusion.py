"""Late fusion: the backbone's and the text retriever's scores, z-scored per sample and added.

    S(u, x, y) = w_b z(h_u . e_y) + w_t z(cos(x, t_y)) + w_p z(log(1 + pop_y))

where `z` standardises one sample's scores over the catalogue (item ids 1..N; PAD is left out
of the mean and deviation and never ranked). The weights are fitted on the validation split by
a grid search maximising NDCG@10 (history masked as in every table): w_t over `TEXT_GRID` with
w_b = 1 - w_t (ranking is invariant to a common positive scale) and w_p over `POP_GRID`; among
equal scores the first candidate wins (lowest text weight, then lowest popularity weight).

Memory: the fit caches the z-scores of at most `MAX_FIT_CELLS` validation rows x items (an
evenly spaced subset of rows on big catalogues); every other use (the test metrics, the
conversation system) scores a batch of rows at a time from the user and utterance vectors,
and with an item chunk (`em.eval_item_chunk`, `multi_turn.item_chunk`) a chunk of items at a
time: each row's mean and deviation come from a first pass over the chunks
(`chunked.moments`), the ranking from a second (`chunked.ChunkedScorer`).

Not part of the paper: the honest bar that a fused model has to beat to be worth its training
(issue 18). The fitted weights and their validation metrics are written to
`<workdir>/eval/late_fusion.json` and reused while its upstream stages are unchanged.
"""

import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.evaluation import chunked, ranking

TEXT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # w_t; w_b = 1 - w_t.
POP_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)  # w_p of the z-scored log popularity.
FIT_METRIC = "ndcg@10"
RESULT = "late_fusion.json"  # Under <workdir>/eval.
MAX_FIT_CELLS = 150_000_000  # Rows x items of the cached z-scores (two float32 copies).


@dataclasses.dataclass(frozen=True)
class Weights:
    """Weights of the z-scored backbone, text and popularity scores."""

    backbone: float
    text: float
    popularity: float = 0.0

    def as_array(self) -> np.ndarray:
        return np.asarray([self.backbone, self.text, self.popularity], np.float32)


def zscore(scores: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Standardises each row over its columns 1..N (column 0 is PAD and is left out).

    Args:
      scores: float32[B, N+1].
      eps: added to the standard deviation (a constant row becomes all zeros).

    Returns:
      float32[B, N+1]; column 0 is 0.
    """
    scores = jnp.asarray(scores, jnp.float32)
    items = scores[:, 1:]
    mean = items.mean(axis=1, keepdims=True)
    std = items.std(axis=1, keepdims=True)
    z = (items - mean) / (std + eps)
    return jnp.concatenate([jnp.zeros_like(scores[:, :1]), z], axis=1)


def fuse(z_backbone: jax.Array, z_text: jax.Array, z_pop: jax.Array, w: jax.Array) -> jax.Array:
    """w[0] z_b + w[1] z_t + w[2] z_p: float32[B, N+1] (z_pop may be float32[N+1])."""
    return w[0] * z_backbone + w[1] * z_text + w[2] * z_pop


class Fused:
    """The fused score for fixed weights and item tables, whole rows or any item ids.

    Args:
      item_emb: float32[N+1, d] backbone item embeddings e_y.
      item_text_emb: float32[N+1, D_x] item-text embeddings t_y.
      log_pop: float32[N+1] log(1 + count).
      weights: the fitted `Weights`.
    """

    def __init__(self, item_emb, item_text_emb, log_pop, weights: Weights, eps: float = 1e-6):
        self.e, self.t = jnp.asarray(item_emb), jnp.asarray(item_text_emb)
        self.zp = zscore(jnp.asarray(log_pop)[None, :])[0]
        self.w = jnp.asarray(weights.as_array())
        self.eps, self.num_ids = eps, self.e.shape[0]
        self.full = jax.jit(self._full)
        self.inputs = jax.jit(self._inputs, static_argnames="chunk_size")

    def _full(self, h: jax.Array, x: jax.Array) -> jax.Array:
        """float32[B, N+1] from user vectors h [B, d] and utterance vectors x [B, D_x]."""
        return fuse(zscore(h @ self.e.T), zscore(x @ self.t.T), self.zp, self.w)

    def _inputs(self, h: jax.Array, x: jax.Array, chunk_size: int) -> tuple:
        """(h, x, mean_b, std_b, mean_t, std_t): each row's moments over items 1..N."""
        b = h.shape[0]
        mb, sb = chunked.moments(
            lambda ids: h @ chunked.take(self.e, ids).T, self.num_ids, b, chunk_size
        )
        mt, st = chunked.moments(
            lambda ids: x @ chunked.take(self.t, ids).T, self.num_ids, b, chunk_size
        )
        return h, x, mb, sb, mt, st

    def item_scores(self, inputs: tuple, ids: jax.Array | None) -> jax.Array:
        """float32[B, C] fused scores of ids int32[C] (None: all ids; PAD's column is not the
        z-score's 0 there, and is never ranked)."""
        h, x, mb, sb, mt, st = inputs
        zb = (h @ chunked.take(self.e, ids).T - mb[:, None]) / (sb[:, None] + self.eps)
        zt = (x @ chunked.take(self.t, ids).T - mt[:, None]) / (st[:, None] + self.eps)
        return fuse(zb, zt, chunked.take(self.zp, ids), self.w)

    def scorer(self, vectors: Callable | None = None) -> chunked.ChunkedScorer:
        """A `ChunkedScorer`; `vectors(histories, texts) -> (h, x)` makes its inputs."""

        def prepare(histories, texts, chunk_size):
            h, x = vectors(histories, texts)
            return self.inputs(jnp.asarray(h), jnp.asarray(x), chunk_size=chunk_size)

        return chunked.ChunkedScorer(prepare, self.item_scores, self.num_ids)


def log_popularity(counts: np.ndarray) -> np.ndarray:
    """log(1 + count) of every item id: float32[N+1]."""
    return np.log1p(np.asarray(counts, np.float32))


def score(
    backbone: np.ndarray, text: np.ndarray, log_pop: np.ndarray, weights: Weights
) -> np.ndarray:
    """The fused score of raw component scores (float32[B, N+1] each, log_pop [N+1])."""
    z_pop = zscore(jnp.asarray(log_pop)[None, :])
    return np.asarray(fuse(zscore(backbone), zscore(text), z_pop, jnp.asarray(weights.as_array())))


def candidates(text_grid=TEXT_GRID, pop_grid=POP_GRID) -> list[Weights]:
    """The search grid in tie-break order (lower text weight, then lower popularity weight)."""
    return [Weights(round(1.0 - t, 6), t, p) for t in text_grid for p in pop_grid]


def fit(
    evaluate: Callable[[Weights], float], grid: Iterable[Weights]
) -> tuple[Weights, float, list[tuple[Weights, float]]]:
    """The grid point with the highest `evaluate`; the first one wins ties.

    Returns:
      (best weights, best value, [(weights, value)] of every grid point).
    """
    trace = [(w, float(evaluate(w))) for w in grid]
    if not trace:
        raise ValueError("late fusion: empty weight grid")
    best, value = trace[0]
    for w, v in trace[1:]:
        if v > value:
            best, value = w, v
    return best, value, trace


def split_evaluator(
    backbone: np.ndarray,
    text: np.ndarray,
    log_pop: np.ndarray,
    target: np.ndarray,
    history: np.ndarray,
    mask_history: bool,
    batch_size: int = 256,
) -> Callable[[Weights], dict[str, float]]:
    """Metrics of the fused score on one split for any weights; z-scores are computed once.

    Args:
      backbone: float32[S, N+1] h_u . e_y.
      text: float32[S, N+1] cosine of utterance and item text.
      log_pop: float32[N+1] log(1 + count).
      target: int32[S]; history: int32[S, H].
      mask_history: mask history items (as every table does by default).
    """
    zb = np.asarray(zscore(backbone))
    zt = np.asarray(zscore(text))
    zp = zscore(jnp.asarray(log_pop)[None, :])[0]
    arrays = {"zb": zb, "zt": zt, "target": target, "history": history}
    batches = list(ranking.padded_batches(arrays, batch_size))

    @jax.jit
    def step(batch, w):
        scores = fuse(batch["zb"], batch["zt"], zp, w)
        return ranking.full_ranking_metrics(
            scores, batch["target"], batch["history"], batch["valid"], mask_history=mask_history
        )

    def evaluate(weights: Weights) -> dict[str, float]:
        w = jnp.asarray(weights.as_array())
        return ranking.evaluate(lambda b: step(b, w), batches)

    return evaluate


# ----------------------------------------------------------------------------------------------
# Workdir: fit on the validation split, cache the weights, score any split.
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Inputs:
    """One split's component scores, row-aligned (see `split_evaluator`)."""

    backbone: np.ndarray
    text: np.ndarray
    target: np.ndarray
    history: np.ndarray


def _fingerprint(workdir: pathlib.Path, mask_history: bool, faithful_backbone: bool) -> str:
    from latentcrs_jax.data import prepare as prepare_lib
    from latentcrs_jax.text import stage as encode_stage
    from latentcrs_jax.training.pretrain import stage as pretrain_stage

    dirs = {
        "data": prepare_lib.data_dir(workdir),
        "embeddings": encode_stage.stage_dir(workdir),
        "pretrain": pretrain_stage.stage_dir(workdir),
    }
    return stage_manifest.fingerprint(
        upstream={name: stage_manifest.content_hash(d) for name, d in dirs.items()},
        mask_history=mask_history,
        faithful_backbone=faithful_backbone,
        text_grid=TEXT_GRID,
        pop_grid=POP_GRID,
        metric=FIT_METRIC,
    )


@dataclasses.dataclass(frozen=True)
class Vectors:
    """One split's factors of the component scores, row-aligned: backbone = h . e_y, text =
    x . t_y (O(rows + items) memory)."""

    h: np.ndarray  # float32[S, d] frozen user states h_u.
    x: np.ndarray  # float32[S, D_x] utterance embeddings.
    item_emb: np.ndarray  # float32[N+1, d].
    item_text: np.ndarray  # float32[N+1, D_x].
    log_pop: np.ndarray  # float32[N+1].
    target: np.ndarray  # int32[S].
    history: np.ndarray  # int32[S, H].


def split_vectors(config, workdir: str | pathlib.Path, split: str, max_rows: int | None = None):
    """`Vectors` of `split` of a workdir with finished encode and pretrain.

    `max_rows` keeps an evenly spaced subset of the rows.
    Raises FileNotFoundError when item-text or utterance embeddings are missing.
    """
    from latentcrs_jax import artifacts
    from latentcrs_jax.data import dataset as dataset_lib
    from latentcrs_jax.data import prepare as prepare_lib
    from latentcrs_jax.evaluation import one_turn
    from latentcrs_jax.text import stage as encode_stage
    from latentcrs_jax.training import em_data

    workdir = pathlib.Path(workdir)
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    s = ds.splits[split]
    items = encode_stage.load(workdir, "items")
    x = encode_stage.load(workdir, split)
    if x.shape[1] != items.shape[1]:
        raise FileNotFoundError(f"{workdir}: utterance and item-text embeddings differ in width")
    rows = np.arange(len(s.target))
    if max_rows is not None and len(rows) > max_rows:
        rows = np.linspace(0, len(rows) - 1, max_rows).astype(np.int64)
    model_cfg, params, _ = artifacts.load_backbone(artifacts.pretrain_dir(workdir))
    h = em_data.user_states(
        model_cfg,
        params,
        s.history[rows],
        pretrain_positions=not bool(config.em.faithful_backbone),
    )
    return Vectors(
        h=np.asarray(h),
        x=x[rows],
        item_emb=np.asarray(params["params"]["item_embed"]["embedding"]),
        item_text=items,
        log_pop=log_popularity(one_turn.popularity_scores(ds)),
        target=s.target[rows],
        history=s.history[rows],
    )


def split_inputs(config, workdir: str | pathlib.Path, split: str, max_rows: int | None = None):
    """(Inputs of `split`, log popularity [N+1]): the whole rows x items component scores, for
    the fit (`max_rows` bounds them). Raises FileNotFoundError as `split_vectors`."""
    v = split_vectors(config, workdir, split, max_rows)
    inputs = Inputs(
        backbone=v.h @ v.item_emb.T, text=v.x @ v.item_text.T, target=v.target, history=v.history
    )
    return inputs, v.log_pop


def evaluator_for(config, workdir, split: str, max_rows: int | None = None):
    """`split_evaluator` over a workdir's split (rows x items z-scores: for the fit)."""
    inputs, log_pop = split_inputs(config, workdir, split, max_rows)
    return split_evaluator(
        inputs.backbone,
        inputs.text,
        log_pop,
        inputs.target,
        inputs.history,
        bool(config.em.mask_history),
    )


def vector_metrics(
    v: Vectors, weights: Weights, mask_history: bool, chunk_size: int = 0, batch_size: int = 256
) -> dict[str, float]:
    """HIT/NDCG of the fused score over a split, `batch_size` rows at a time.

    Never holds rows x items scores: a batch's [B, N+1] scores, or with `chunk_size` > 0
    [B, chunk_size] (moments, then a running top-k over the chunks).
    """
    fused = Fused(v.item_emb, v.item_text, v.log_pop, weights)
    arrays = {"h": v.h, "x": v.x, "target": v.target, "history": v.history}
    if not chunk_size:

        @jax.jit
        def step(b):
            return ranking.full_ranking_metrics(
                fused.full(b["h"], b["x"]),
                b["target"],
                b["history"],
                b["valid"],
                mask_history=mask_history,
            )

        return ranking.evaluate(step, ranking.padded_batches(arrays, batch_size))
    scorer, kmax = fused.scorer(), max(ranking.DEFAULT_KS)
    acc = ranking.MetricAccumulator()
    for b in ranking.padded_batches(arrays, batch_size):
        inputs = fused.inputs(jnp.asarray(b["h"]), jnp.asarray(b["x"]), chunk_size=chunk_size)
        ids, scores = scorer.top_k_prepared(inputs, b["history"], kmax, chunk_size, mask_history)
        acc.add(ranking.metrics_from_top_k(ids, scores, b["target"], b["valid"]))
    return acc.result()


def load_or_fit(config, workdir: str | pathlib.Path) -> Weights:
    """The validation-fitted weights of a workdir (fitted and saved on first use).

    Raises FileNotFoundError when the workdir has no item-text or utterance embeddings.
    """
    workdir = pathlib.Path(workdir)
    mask_history = bool(config.em.mask_history)
    fp = _fingerprint(workdir, mask_history, bool(config.em.faithful_backbone))
    path = workdir / "eval" / RESULT
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("fingerprint") == fp:
            return Weights(**saved["weights"])
    from latentcrs_jax.data import dataset as dataset_lib
    from latentcrs_jax.data import prepare as prepare_lib

    num_items = dataset_lib.load(prepare_lib.data_dir(workdir), config.data).num_items
    evaluate = evaluator_for(config, workdir, "valid", max(1, MAX_FIT_CELLS // (num_items + 1)))
    metrics: dict[Weights, dict[str, float]] = {}

    def objective(w: Weights) -> float:
        metrics[w] = evaluate(w)
        return metrics[w][FIT_METRIC]

    best, value, _ = fit(objective, candidates())
    logging.info("late fusion: fitted %s (valid %s %.4f)", best, FIT_METRIC, value)
    fileio.write_json(
        path,
        {
            "fingerprint": fp,
            "weights": dataclasses.asdict(best),
            "fit_metric": f"valid/{FIT_METRIC}",
            "valid": metrics[best],
            "grid": [
                dataclasses.asdict(w) | {FIT_METRIC: m[FIT_METRIC]} for w, m in metrics.items()
            ],
        },
    )
    return best


def metrics(config, workdir, split: str = "test") -> dict[str, float]:
    """HIT/NDCG of late fusion on `split` with the validation-fitted weights (items chunked by
    `em.eval_item_chunk`)."""
    weights = load_or_fit(config, workdir)
    v = split_vectors(config, workdir, split)
    chunk = int(config.em.eval_item_chunk)
    return vector_metrics(v, weights, bool(config.em.mask_history), chunk)


def recommender_score(
    user_states: Callable[[np.ndarray], np.ndarray],
    embed: Callable[[Sequence[str]], np.ndarray],
    item_emb: np.ndarray,
    item_text_emb: np.ndarray,
    log_pop: np.ndarray,
    weights: Weights,
) -> Callable[[np.ndarray, Sequence[str]], np.ndarray]:
    """`score(histories int32[B, H], texts) -> float32[B, N+1]` for the conversation systems."""
    fused = Fused(item_emb, item_text_emb, log_pop, weights)

    def score_fn(history, texts):
        return np.asarray(fused.full(user_states(history), embed(list(texts))))

    return score_fn


def chunked_scorer(
    user_states, embed, item_emb, item_text_emb, log_pop, weights: Weights
) -> chunked.ChunkedScorer:
    """`recommender_score`'s ranking, a chunk of items at a time (same arguments)."""
    fused = Fused(item_emb, item_text_emb, log_pop, weights)
    return fused.scorer(lambda history, texts: (user_states(history), embed(list(texts))))


def describe(weights: Weights) -> str:
    """'w_b 0.60, w_t 0.40, w_p 0.10' for tables and logs."""
    return f"w_b {weights.backbone:.2f}, w_t {weights.text:.2f}, w_p {weights.popularity:.2f}"
