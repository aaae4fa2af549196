"""Trained systems as ranking functions over (history, text), for multi-turn evaluation and chat.

`load_systems(config, workdir, seed)` reads a finished workdir (dataset, backbone, EM stages,
item-text embeddings) and returns named `Recommender`s, each with
`score(histories int32[B, H], texts list[str]) -> float32[B, N+1]` (higher is better; the
caller masks PAD and whatever else it needs). Texts are embedded with the workdir's encoder.

Systems (each present when its stage or input exists), the rows of the one-turn table:
"latentcrs" (the EM prior's mixture), "posterior" (q(m|u) of the same EM stage, text ignored),
"backbone" (SASRec h_u . e_y, text ignored), "fusion" (the no-EM fusion prior), "no_kl" and
"no_rec" (the ablations' EM priors), "text" (cosine of text and item-text embeddings),
"popularity" (training-interaction counts, history and text ignored), "late_fusion"
(z-scored backbone + text + log popularity, weights fitted on the validation split:
evaluation/late_fusion.py).

Every system also carries a `chunked.ChunkedScorer` (`Recommender.ranker`): the same scores
for any subset of item ids, so that callers with an item chunk (`multi_turn.item_chunk`,
`em.eval_item_chunk` in the one-turn table) never hold B x (N+1) scores.
"""

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from latentcrs_jax import artifacts
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.evaluation import chunked, late_fusion, one_turn
from latentcrs_jax.text import encode
from latentcrs_jax.text import stage as encode_stage
from latentcrs_jax.training import em, em_data


@dataclasses.dataclass
class Recommender:
    """A named ranking function; `intents` (optional) explains the prior's choice."""

    name: str
    score: Callable[[np.ndarray, Sequence[str]], np.ndarray]
    intents: Callable[[np.ndarray, Sequence[str]], np.ndarray] | None = None
    ranker: chunked.ChunkedScorer | None = None  # The same scores, any item ids.


def dot_scorer(vectors: Callable[[np.ndarray, Sequence[str]], Any], table) -> chunked.ChunkedScorer:
    """`ChunkedScorer` of score(b, y) = vectors(histories, texts)[b] . table[y]."""
    table = jnp.asarray(table)
    return chunked.ChunkedScorer(
        lambda history, texts, _: jnp.asarray(vectors(history, texts)),
        lambda v, ids: v @ chunked.take(table, ids).T,
        table.shape[0],
    )


@dataclasses.dataclass
class Context:
    """What the systems share: the dataset, the encoder, the frozen backbone and its intents."""

    dataset: dataset_lib.ProcessedDataset
    embed: Callable[[Sequence[str]], np.ndarray]
    user_states: Callable[[np.ndarray], np.ndarray]
    item_emb: np.ndarray
    item_text_emb: np.ndarray | None
    intents: np.ndarray | None = None  # float32[K, D], the backbone's intent vectors


def load_context(config, workdir: str | pathlib.Path, wrap_embed=None) -> Context:
    """Loads the dataset, the text encoder and the backbone.

    Args:
      config: the experiment config.
      workdir: a finished workdir.
      wrap_embed: optional `f(embed) -> embed` (e.g. a memo shared by every system).
    """
    workdir = pathlib.Path(workdir)
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    settings = encode.TextSettings.from_config(config.text)
    encoder = encode.TextEncoder.from_settings(settings)
    model_cfg, params, intents = artifacts.load_backbone(artifacts.pretrain_dir(workdir))
    faithful = bool(config.em.faithful_backbone)

    def user_states(history: np.ndarray) -> np.ndarray:
        return em_data.user_states(model_cfg, params, history, pretrain_positions=not faithful)

    try:
        item_text = encode_stage.load(workdir, "items")
    except FileNotFoundError:
        item_text = None
    return Context(
        dataset=ds,
        embed=wrap_embed(encoder.encode) if wrap_embed else encoder.encode,
        user_states=user_states,
        item_emb=np.asarray(params["params"]["item_embed"]["embedding"]),
        item_text_emb=item_text,
        intents=intents,
    )


def _prior_system(name: str, ctx: Context, cfg: em.EMConfig, params, intents) -> Recommender:
    prior = em.latentcrs.Prior(jnp.asarray(intents), cfg.prior_config)
    emb = jnp.asarray(ctx.item_emb)
    if cfg.prior_config.text_item and ctx.item_text_emb is None:
        raise FileNotFoundError(f"{name}: text_item_weight needs the item-text embeddings")
    item_text = jnp.asarray(ctx.item_text_emb) if cfg.prior_config.text_item else None

    @jax.jit
    def forward(p, h, x):
        dist, user = prior.apply(p, h, x, deterministic=True)
        scores = user @ emb.T
        if item_text is not None:  # the item-text channel (EMConfig.text_item_weight)
            scores = scores + prior.apply(p, x, item_text, method="text_item_scores")
        return dist, scores

    def score(history, texts):
        return np.asarray(forward(params, ctx.user_states(history), ctx.embed(list(texts)))[1])

    def intent_dist(history, texts):
        return np.asarray(forward(params, ctx.user_states(history), ctx.embed(list(texts)))[0])

    @jax.jit
    def vectors(p, h, x):
        return prior.apply(p, h, x, deterministic=True)[1]

    def prepare(history, texts, _):
        x = jnp.asarray(ctx.embed(list(texts)))
        return params, vectors(params, ctx.user_states(history), x), x

    def item_scores(inputs, ids):
        p, user, x = inputs
        scores = user @ chunked.take(emb, ids).T
        if item_text is not None:
            scores = scores + prior.apply(
                p, x, chunked.take(item_text, ids), method="text_item_scores"
            )
        return scores

    ranker = chunked.ChunkedScorer(prepare, item_scores, emb.shape[0])
    return Recommender(name, score, intent_dist, ranker)


def _posterior_system(ctx: Context, params, intents) -> Recommender:
    posterior = em.latentcrs.Posterior(jnp.asarray(intents))
    emb = jnp.asarray(ctx.item_emb)

    @jax.jit
    def forward(p, h):
        q, user = posterior.apply(p, h)
        return q, user @ emb.T

    def score(history, texts):
        del texts
        return np.asarray(forward(params, ctx.user_states(history))[1])

    def intent_dist(history, texts):
        del texts
        return np.asarray(forward(params, ctx.user_states(history))[0])

    user_vector = jax.jit(lambda p, h: posterior.apply(p, h)[1])
    ranker = dot_scorer(lambda history, _: user_vector(params, ctx.user_states(history)), emb)
    return Recommender("posterior", score, intent_dist, ranker)


def _popularity_system(ctx: Context) -> Recommender:
    counts = one_turn.popularity_scores(ctx.dataset)  # float32[N+1]

    def score(history, texts):
        return np.broadcast_to(counts, (len(history), counts.shape[0])).copy()

    table = jnp.asarray(counts)

    def item_scores(rows, ids):  # rows: float32[B], only its length counts
        column = chunked.take(table, ids)
        return jnp.broadcast_to(column, (rows.shape[0], column.shape[0]))

    prepare = lambda history, texts, _: jnp.zeros(len(history), jnp.float32)  # noqa: E731
    ranker = chunked.ChunkedScorer(prepare, item_scores, table.shape[0])
    return Recommender("popularity", score, ranker=ranker)


# System name -> EM stage whose prior it is (first EM seed unless `seed`).
PRIOR_STAGES = {"latentcrs": "em", "fusion": "fusion", "no_kl": "no_kl_em", "no_rec": "no_rec_em"}


def load_systems(
    config, workdir: str | pathlib.Path, seed: int | None = None, wrap_embed=None
) -> tuple[dict[str, Recommender], Context]:
    """Every available system of a finished workdir (first EM seed unless `seed`)."""
    workdir = pathlib.Path(workdir)
    ctx = load_context(config, workdir, wrap_embed)
    seed = config.em_seeds[0] if seed is None else seed
    cfg = em.EMConfig.from_config(config.em)
    emb = ctx.item_emb
    systems = {
        "backbone": Recommender(
            "backbone",
            lambda history, texts: ctx.user_states(history) @ emb.T,
            ranker=dot_scorer(lambda history, _: ctx.user_states(history), emb),
        )
    }
    for name, phase in PRIOR_STAGES.items():
        path = artifacts.em_phase_dir(workdir, seed, phase) / artifacts.BEST_PARAMS
        if path.is_file():
            params = artifacts.load_params(path)
            systems[name] = _prior_system(name, ctx, cfg, params["prior"], ctx.intents)
            if name == "latentcrs":
                systems["posterior"] = _posterior_system(ctx, params["posterior"], ctx.intents)
    if ctx.item_text_emb is not None:
        items = ctx.item_text_emb
        systems["text"] = Recommender(
            "text",
            lambda history, texts: ctx.embed(list(texts)) @ items.T,
            ranker=dot_scorer(lambda _, texts: ctx.embed(list(texts)), items),
        )
        try:
            weights = late_fusion.load_or_fit(config, workdir)
        except FileNotFoundError as e:  # No utterance embeddings to fit on.
            logging.warning("no late_fusion system: %s", e)
        else:
            log_pop = late_fusion.log_popularity(one_turn.popularity_scores(ctx.dataset))
            parts = (ctx.user_states, ctx.embed, emb, items, log_pop, weights)
            systems["late_fusion"] = Recommender(
                "late_fusion",
                late_fusion.recommender_score(*parts),
                ranker=late_fusion.chunked_scorer(*parts),
            )
    systems["popularity"] = _popularity_system(ctx)
    return systems, ctx
