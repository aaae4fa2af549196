"""What every backbone task shares: state, host batches, the encoder scan, K-means over the
sequence embeddings and the full-ranking evaluation. One subclass per loss family defines
`train_step` (`iclrec.ICLRecTask`, `bce.BCETask`, `ce.CETask`, `ce_intent.CEIntentTask`;
`stage.make_task` picks one).
"""

import dataclasses
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latentcrs_jax.data.ragged import padded_width
from latentcrs_jax.evaluation import ranking
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import kmeans, loop, sharding
from latentcrs_jax.training.pretrain.config import PretrainConfig
from latentcrs_jax.training.pretrain.data import SequenceData, bucket_width, sample_negatives


class PretrainTask:
    """SASRec backbone training as a `loop.Task`; subclasses implement `train_step`."""

    # Batches carry "negative" (one sampled negative per target, for the BCE term).
    uses_negatives = False
    # Batches carry "full" (the whole S[:-3], the augmentation source).
    uses_full = False
    # Block-causal attention is exact at real positions only: not for losses that pool over
    # every position (ICLRec's contrast).
    block_causal = True
    # K-means runs at every epoch's start (centroids in `TrainState.extras`).
    clusters_each_epoch = False

    def __init__(
        self, data: SequenceData, model_cfg: sasrec.SASRecConfig, cfg: PretrainConfig, mesh
    ):
        if model_cfg.num_items != data.num_items:
            raise ValueError(f"model has {model_cfg.num_items} items, data {data.num_items}")
        self.data, self.model_cfg, self.cfg, self.mesh = data, model_cfg, cfg, mesh
        blocks = cfg.query_blocks if self.block_causal else 1
        self.model = sasrec.SASRec(
            dataclasses.replace(model_cfg, remat=cfg.remat, query_blocks=blocks)
        )
        sharding.check_batch_size(cfg.batch_size, mesh)
        sharding.check_batch_size(cfg.eval_batch_size, mesh)
        sharding.check_batch_size(cfg.microbatch_rows, mesh)
        self._mean_embed = jax.jit(
            lambda params, ids: self.model.apply(params, ids, deterministic=True).mean(1)
        )

    # -- state --------------------------------------------------------------------------------

    def create_state(self, rng: jax.Array) -> loop.TrainState:
        """Fresh params, Adam(lr, 0.9, 0.999), and the family's `initial_extras`."""
        init_rng, step_rng = jax.random.split(rng)
        params = sasrec.init_params(self.model_cfg, init_rng)
        tx = optax.adam(self.learning_rate(), b1=0.9, b2=0.999)
        return loop.TrainState.create(params, tx, step_rng, self.initial_extras())

    def initial_extras(self) -> dict:
        """Non-trained state carried in `TrainState.extras` (none by default)."""
        return {}

    def learning_rate(self) -> float | optax.Schedule:
        """`lr`, multiplied by `lr_decay_factor` after each epoch in `lr_decay_epochs`."""
        cfg = self.cfg
        if not cfg.lr_decay_epochs:
            return cfg.lr
        n = self.num_train_batches()
        bounds = {int(e) * n: cfg.lr_decay_factor for e in cfg.lr_decay_epochs}
        return optax.piecewise_constant_schedule(cfg.lr, bounds)

    # -- host data ----------------------------------------------------------------------------

    def num_train_batches(self) -> int:
        return -(-len(self.data.train_users) // self.cfg.batch_size)

    def train_batches(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Shuffled fixed-size batches; order and negatives depend only on (seed, epoch)."""
        d, cfg = self.data, self.cfg
        order = np.random.default_rng([cfg.seed, epoch, 0]).permutation(len(d.train_users))
        neg_rng = np.random.default_rng([cfg.seed, epoch, 1])
        arrays = {"input": d.train_input, "target": d.train_target}
        batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        if cfg.length_buckets:
            # Similar lengths together (stable sort of the shuffled order), batches in random
            # order; each batch keeps only its last `width` columns (right-aligned positions).
            lengths = (d.train_input[order] > 0).sum(1)
            by_len = order[np.argsort(lengths, kind="stable")]
            batches = [
                by_len[s : s + cfg.batch_size] for s in range(0, len(by_len), cfg.batch_size)
            ]
            perm = np.random.default_rng([cfg.seed, epoch, 2]).permutation(len(batches))
            batches = [batches[i] for i in perm]
        for rows in batches:
            width = bucket_width(d.train_input[rows], cfg.length_buckets)
            chunk = {k: v[rows][:, -width:] for k, v in arrays.items()}
            if self.uses_full:  # the whole S[:-3], one width W for every batch (one compile)
                chunk["full"] = d.train_full.left_padded(rows, d.full_width)
            batch = next(ranking.padded_batches(chunk, cfg.batch_size))
            if self.uses_negatives:  # one sampled negative per target (BCE)
                users = np.zeros(cfg.batch_size, np.int64)
                users[: len(rows)] = d.train_users[rows]
                negs = sample_negatives(
                    neg_rng, users, batch["target"].shape, d.num_items, d.user_item_keys
                )
                batch["negative"] = np.where(batch["target"] > 0, negs, 0).astype(np.int32)
            yield batch

    def exclude_width(self, split: str, rows: np.ndarray) -> int:
        """Columns of a batch's `exclude`: its longest prefix rounded up to L * 2**k, at most
        the split's longest prefix (`ragged.padded_width`; a few eval compilations)."""
        exclude = self.data.eval[split]["exclude"]
        needed = int(exclude.lengths[rows].max()) if len(rows) else 1
        return padded_width(needed, self.model_cfg.max_len, exclude.max_length)

    def eval_batches(self, split: str) -> Iterator[dict[str, np.ndarray]]:
        """Fixed-size batches of a split; with `length_buckets`, users sorted by input length
        and each batch cut to its bucket width (right-aligned positions: same scores). Each
        batch's `exclude` (the whole input prefix) is left-padded to `exclude_width`."""
        e, cfg = self.data.eval[split], self.cfg
        order = np.arange(len(e["target"]))
        if cfg.length_buckets:
            order = np.argsort((e["input"] > 0).sum(1), kind="stable")
        for start in range(0, len(order), cfg.eval_batch_size):
            rows = order[start : start + cfg.eval_batch_size]
            width = bucket_width(e["input"][rows], cfg.length_buckets)
            chunk = {"input": e["input"][rows][:, -width:], "target": e["target"][rows]}
            chunk["exclude"] = e["exclude"].left_padded(rows, self.exclude_width(split, rows))
            yield next(ranking.padded_batches(chunk, cfg.eval_batch_size))

    # -- epoch hook: K-means ------------------------------------------------------------------

    def sequence_embeddings(self, params) -> np.ndarray:
        """Eval-mode mean-over-positions outputs of every training input: float32[T, D]."""
        out = []
        bs = self.cfg.eval_batch_size
        for batch in ranking.padded_batches({"input": self.data.train_input}, bs):
            placed = sharding.place_batch(batch, self.mesh)
            out.append(self._mean_embed(params, placed["input"]))
        return np.concatenate(jax.device_get(out))[: len(self.data.train_users)]

    def fit_clusters(self, params) -> kmeans.KMeansResult:
        """K-means over `sequence_embeddings(params)` with the faiss-like settings."""
        kcfg = kmeans.KMeansConfig(
            self.cfg.num_intents, self.cfg.kmeans_iters, self.cfg.kmeans_redo, self.cfg.seed
        )
        return kmeans.fit(self.sequence_embeddings(params), kcfg)

    def on_epoch_start(self, state: loop.TrainState, epoch: int) -> loop.TrainState:
        return state

    # -- steps --------------------------------------------------------------------------------

    def step_keys(self, state: loop.TrainState) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The step's (k_rec, k_views, k_aug) keys, split from `fold_in(state.rng, step)`: the
        recommendation loss's dropout, the augmented views' dropout, the augmentations."""
        rng = jax.random.fold_in(state.rng, state.step)
        k_rec, k_views, k_aug = jax.random.split(rng, 3)
        return k_rec, k_views, k_aug

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        raise NotImplementedError

    def _micro_split(self, x: jax.Array) -> jax.Array:
        """[B, ...] -> [B / m, m, ...] for `microbatch` m: microbatch j holds rows j, j + B/m,
        ... so that every device keeps its own rows (B is sharded over devices)."""
        rows = self.cfg.microbatch_rows
        return x.reshape(rows, x.shape[0] // rows, *x.shape[1:]).swapaxes(0, 1)

    def _encode(self, params, seqs: jax.Array, keys: jax.Array) -> jax.Array:
        """Train-mode outputs of S stacked inputs, `microbatch` sequences at a time.

        A `lax.scan` over (input, microbatch) pairs with each step recomputed in the backward
        pass (`jax.checkpoint`): only the outputs are kept, and each recomputation works on
        cache-sized activations. Input s, microbatch j draws its dropout from
        `fold_in(keys[s], j)`.

        Args:
          params: backbone variables.
          seqs: int32[S, B, L] inputs (the sequences and their augmented views).
          keys: [S] PRNG keys, one per input.

        Returns:
          float32[S, B, L, D].
        """
        n_in, b, width = seqs.shape
        micro = jax.vmap(self._micro_split)(seqs)  # [S, n, rows, L]
        n_micro, rows = micro.shape[1], micro.shape[2]
        fold = jax.vmap(jax.random.fold_in, in_axes=(None, 0))  # one key, n indices
        micro_keys = jax.vmap(fold, in_axes=(0, None))(keys, jnp.arange(n_micro))  # [S, n, .]

        @jax.checkpoint
        def encode(_, xs):
            ids, key = xs
            out = self.model.apply(
                params, ids, deterministic=False, right_aligned=True, rngs={"dropout": key}
            )
            return None, out

        flat = (micro.reshape(n_in * n_micro, rows, width), micro_keys.reshape(n_in * n_micro, -1))
        _, out = jax.lax.scan(encode, None, flat)  # [S * n, rows, L, D]
        out = out.reshape(n_in, n_micro, rows, width, -1).swapaxes(1, 2)
        return out.reshape(n_in, b, width, -1)

    def user_scores(self, params, input_ids: jax.Array) -> jax.Array:
        """float32[B, N+1] eval-mode h_u . e_y (inputs may be cut to a bucket width)."""
        return self.model.apply(
            params, input_ids, right_aligned=True, method=sasrec.SASRec.score_all
        )

    def _user_state(self, params, input_ids: jax.Array) -> jax.Array:
        return self.model.apply(
            params,
            input_ids,
            deterministic=True,
            right_aligned=True,
            method=sasrec.SASRec.user_state,
        )

    def eval_step(self, state: loop.TrainState, batch: dict) -> ranking.Sums:
        cfg = self.cfg
        if cfg.eval_item_chunk:
            h = self._user_state(state.params, batch["input"])
            table = state.params["params"]["item_embed"]["embedding"]
            top_scores, top_ids = ranking.chunked_top_k(
                ranking.dot_product_chunk_fn(h, table),
                table.shape[0],
                h.shape[0],
                batch["exclude"],
                k=max(cfg.ks),
                chunk_size=cfg.eval_item_chunk,
                mask_history=cfg.mask_history_in_eval,
            )
            return ranking.metrics_from_top_k(
                top_ids, top_scores, batch["target"], batch["valid"], cfg.ks
            )
        scores = self.user_scores(state.params, batch["input"])
        return ranking.full_ranking_metrics(
            scores,
            batch["target"],
            batch["exclude"],
            batch["valid"],
            ks=cfg.ks,
            mask_history=cfg.mask_history_in_eval,
        )
