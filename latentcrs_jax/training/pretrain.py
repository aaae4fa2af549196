"""The backbone task: SASRec with ICLRec's losses (or SASRec-CE), and the K intent vectors.

Data (method.md section 1.4, ICLRec `datasets.py`): one training sample per user, input
S[:-3] with next-item targets S[1:-2] at every position; valid input S[:-2] -> S[-2]; test
input S[:-1] -> S[-1]; inputs keep their last `max_len` items, left-padded. Evaluation ranks all
items with the user's whole input prefix masked (ICLRec masks the train items too, with score 0
instead of -inf).

Losses (`loss`):
* "iclrec": next-item BCE with one negative per position + over C(n_views, 2) pairs of fresh
  augmentations, cf_weight * instance InfoNCE (flattened outputs) + intent_cf_weight * intent
  contrast (mean outputs vs the centroid assigned to the original sequence's train-mode mean).
  K-means runs at the start of every epoch over the eval-mode mean outputs of all training
  inputs. Deviation (documented in BUILD_NOTES): each augmented view is encoded once and used by
  both contrastive losses; the authors encode the views twice (separate dropout draws).
  The views are drawn with `augment.random_augment_suffix` (the kept last L columns of an
  augmentation of the whole S[:-3], same distribution as augmenting everything then slicing).
* "ce": SASRec-CE, softmax cross-entropy over all items at every position, nothing else.

Negatives for the BCE loss are drawn on the host with numpy: uniform over 1..N, rejected and
redrawn while they fall in the user's *whole* sequence (as `utils.py:neg_sample`), from a
generator seeded by (seed, epoch), so an epoch's negatives are reproducible after a resume.

Outputs in `<workdir>/pretrain/`: checkpoints/, metrics.jsonl, final_metrics.json,
backbone.msgpack + backbone_config.json (the best parameters), centroids.npy [K, D] (raw),
intents.npy [K, D] (L2-normalised: the intent vectors), assignments.npy int32[U] (cluster of
each user's training sequence, -1 if none) and result.json (written last: the stage is done).
"""

import dataclasses
import functools
import itertools
import json
import pathlib
import time
from collections.abc import Iterator, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from latentcrs_jax import config_utils, fileio
from latentcrs_jax.data import augment
from latentcrs_jax.evaluation import ranking
from latentcrs_jax.losses import sequential
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import kmeans, loop, sharding

STAGE_DIR = "pretrain"
# "iclrec": next-item BCE + instance and intent contrast (the authors'); "ce": full-softmax
# cross-entropy (SASRec-CE); "bce": ICLRec's next-item BCE alone (SASRec as ICLRec trains it,
# without the contrastive terms: the ablation that shows what they add).
LOSSES = ("iclrec", "ce", "bce")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Backbone-training settings (see configs/base.py:get_pretrain_config for each field)."""

    loss: str = "iclrec"
    batch_size: int = 256
    eval_batch_size: int = 256
    lr: float = 1e-3
    lr_decay_epochs: tuple[int, ...] = ()
    lr_decay_factor: float = 0.1
    max_epochs: int = 300
    patience: int = 40
    early_stop_metric: str = "valid/ndcg@20"
    cf_weight: float = 0.1
    intent_cf_weight: float = 0.1
    temperature: float = 1.0
    n_views: int = 3
    num_intents: int = 512
    kmeans_iters: int = 20
    kmeans_redo: int = 5
    augment_window: int = 0
    mask_history_in_eval: bool = True
    eval_item_chunk: int = 0
    ce_chunk: int = 512
    microbatch: int = 16
    length_buckets: int = 0
    remat: bool = False
    query_blocks: int = 4
    ks: tuple[int, ...] = ranking.DEFAULT_KS
    eval_splits: tuple[str, ...] = ("valid",)
    faithful_centroid_timing: bool = False
    seed: int = 1

    @property
    def microbatch_rows(self) -> int:
        """Sequences per scan step: `microbatch`, or the whole batch when it is 0 or larger."""
        return self.microbatch if 0 < self.microbatch < self.batch_size else self.batch_size

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"pretrain.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.length_buckets and self.loss == "iclrec":
            raise ValueError(
                "length_buckets does not apply to loss='iclrec' (its in-batch contrast wants "
                "random batches, and its losses read every padding position)"
            )
        if not set(self.eval_splits) <= {"valid", "test"} or "valid" not in self.eval_splits:
            raise ValueError(
                f"eval_splits must be 'valid' plus optionally 'test', got {self.eval_splits}"
            )
        if self.query_blocks < 1:
            raise ValueError(f"query_blocks must be >= 1, got {self.query_blocks}")
        if self.ce_chunk < 1:
            raise ValueError(f"ce_chunk must be >= 1, got {self.ce_chunk}")
        if self.batch_size % self.microbatch_rows:
            raise ValueError(
                f"microbatch={self.microbatch} must divide batch_size={self.batch_size}"
            )
        if self.loss == "iclrec" and self.n_views < 2:
            raise ValueError(f"n_views must be >= 2 for the iclrec loss, got {self.n_views}")


# ----------------------------------------------------------------------------------------------
# Host data: ICLRec cut points, padding, negatives, batches.
# ----------------------------------------------------------------------------------------------


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
    """Left-padded arrays of the three splits.

    Attributes:
      num_items: N.
      train_users: int32[T] users with a training sample (len(S) >= 4).
      train_input: int32[T, L] S[:-3].
      train_target: int32[T, L] S[1:-2], aligned with train_input.
      train_full: int32[T, W] the whole S[:-3] (augmentation source), W >= L.
      eval: split -> dict(user int32[E], input int32[E, L], target int32[E],
        exclude int32[E, X]) for "valid" (S[:-2] -> S[-2]) and "test" (S[:-1] -> S[-1]).
      user_item_keys: int64 sorted user * (N + 1) + item over whole sequences (negatives).
    """

    num_items: int
    train_users: np.ndarray
    train_input: np.ndarray
    train_target: np.ndarray
    train_full: np.ndarray
    eval: dict
    user_item_keys: np.ndarray


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
      The padded arrays.
    """
    seqs = [np.asarray(s, np.int64) for s in sequences]
    for u, s in enumerate(seqs):
        if len(s) and (s.min() < 1 or s.max() > num_items):
            raise ValueError(f"user {u} has item ids outside 1..{num_items}")
    train_users = np.array([u for u, s in enumerate(seqs) if len(s) >= 4], np.int32)
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
            "exclude": left_pad(prefixes, max(len(p) for p in prefixes)),
        }
    keys = np.concatenate(
        [u * (num_items + 1) + np.unique(s) for u, s in enumerate(seqs) if len(s)]
    )
    return SequenceData(
        num_items=num_items,
        train_users=train_users,
        train_input=left_pad(train_in, max_len),
        train_target=left_pad([seqs[u][1:-2] for u in train_users], max_len),
        train_full=left_pad(train_in, width),
        eval=evals,
        user_item_keys=np.sort(keys),
    )


def _bucket_width(inputs: np.ndarray, buckets: int) -> int:
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


# ----------------------------------------------------------------------------------------------
# The task.
# ----------------------------------------------------------------------------------------------


class PretrainTask:
    """SASRec backbone training as a `loop.Task`."""

    def __init__(
        self, data: SequenceData, model_cfg: sasrec.SASRecConfig, cfg: PretrainConfig, mesh
    ):
        if model_cfg.num_items != data.num_items:
            raise ValueError(f"model has {model_cfg.num_items} items, data {data.num_items}")
        if cfg.loss == "iclrec" and cfg.num_intents > len(data.train_users):
            raise ValueError(
                f"num_intents={cfg.num_intents} exceeds the {len(data.train_users)} training "
                "sequences; lower pretrain.num_intents"
            )
        self.data, self.model_cfg, self.cfg, self.mesh = data, model_cfg, cfg, mesh
        # Block-causal attention is exact at real positions only: not for ICLRec, whose
        # contrastive losses pool over every position.
        blocks = 1 if cfg.loss == "iclrec" else cfg.query_blocks
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
        """Fresh params, Adam(lr, 0.9, 0.999), and zero centroids for the iclrec loss."""
        init_rng, step_rng = jax.random.split(rng)
        params = sasrec.init_params(self.model_cfg, init_rng)
        tx = optax.adam(self.learning_rate(), b1=0.9, b2=0.999)
        extras = {}
        if self.cfg.loss == "iclrec":
            extras = {"centroids": jnp.zeros((self.cfg.num_intents, self.model_cfg.hidden))}
        return loop.TrainState.create(params, tx, step_rng, extras)

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
        if cfg.loss == "iclrec":
            arrays["full"] = d.train_full
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
            width = _bucket_width(d.train_input[rows], cfg.length_buckets)
            batch = next(
                ranking.padded_batches(
                    {k: v[rows][:, -width:] if k != "full" else v[rows] for k, v in arrays.items()},
                    cfg.batch_size,
                )
            )
            if cfg.loss != "ce":  # one sampled negative per target (BCE)
                users = np.zeros(cfg.batch_size, np.int64)
                users[: len(rows)] = d.train_users[rows]
                negs = sample_negatives(
                    neg_rng, users, batch["target"].shape, d.num_items, d.user_item_keys
                )
                batch["negative"] = np.where(batch["target"] > 0, negs, 0).astype(np.int32)
            yield batch

    def eval_batches(self, split: str) -> Iterator[dict[str, np.ndarray]]:
        """Fixed-size batches of a split; with `length_buckets`, users sorted by input length
        and each batch cut to its bucket width (right-aligned positions: same scores)."""
        e, cfg = self.data.eval[split], self.cfg
        arrays = {"input": e["input"], "target": e["target"], "exclude": e["exclude"]}
        if not cfg.length_buckets:
            yield from ranking.padded_batches(arrays, cfg.eval_batch_size)
            return
        order = np.argsort((e["input"] > 0).sum(1), kind="stable")
        for start in range(0, len(order), cfg.eval_batch_size):
            rows = order[start : start + cfg.eval_batch_size]
            width = _bucket_width(e["input"][rows], cfg.length_buckets)
            chunk = {k: v[rows][:, -width:] if k == "input" else v[rows] for k, v in arrays.items()}
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
        if self.cfg.loss != "iclrec":
            return state
        t0 = time.perf_counter()
        res = self.fit_clusters(state.params)
        logging.info(
            "epoch %d: K-means K=%d in %.1fs", epoch, self.cfg.num_intents, time.perf_counter() - t0
        )
        cents = sharding.replicate(jnp.asarray(res.centroids), self.mesh)
        return state.replace(extras={"centroids": cents})

    # -- steps --------------------------------------------------------------------------------

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        cfg = self.cfg
        rng = jax.random.fold_in(state.rng, state.step)
        k_rec, k_views, k_aug = jax.random.split(rng, 3)
        if cfg.loss in ("ce", "bce"):
            if cfg.loss == "ce":
                loss, grads = self._ce_value_and_grad(state.params, batch, k_rec)
            else:
                loss, grads = jax.value_and_grad(self._bce_loss)(state.params, batch, k_rec)
            metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "rec_loss": loss}
            return state.apply_gradients(grads), metrics

        valid = batch["valid"]
        pairs = list(itertools.combinations(range(cfg.n_views), 2))
        aug_keys = jax.random.split(k_aug, 2 * len(pairs))
        seq_len = batch["input"].shape[1]
        views = jnp.stack(
            [augment.random_augment_suffix(k, batch["full"], seq_len) for k in aug_keys]
        )  # [2P, B, L]; pair p is (views[2p], views[2p + 1])
        seqs = jnp.concatenate([batch["input"][None], views])  # [1 + 2P, B, L]
        keys = jnp.concatenate([k_rec[None], jax.random.split(k_views, views.shape[0])])

        def loss_fn(params):
            outs = self._encode(params, seqs, keys)  # [1 + 2P, B, L, D]
            out, b = outs[0], outs.shape[1]
            table = params["params"]["item_embed"]["embedding"]
            rec = sequential.next_item_bce(out, table, batch["target"], batch["negative"])
            cents = state.extras["centroids"]
            ids = kmeans.assign(jax.lax.stop_gradient(out.mean(1)), cents)
            unit = cents / jnp.maximum(jnp.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
            assigned = unit[ids]
            inst = intent = 0.0
            for p in range(len(pairs)):
                va, vb = outs[1 + 2 * p], outs[2 + 2 * p]
                inst += sequential.info_nce(
                    va.reshape(b, -1), vb.reshape(b, -1), cfg.temperature, valid
                )
                intent += sequential.intent_contrast(
                    va.mean(1), vb.mean(1), assigned, cfg.temperature, valid
                )
            loss = rec + cfg.cf_weight * inst + cfg.intent_cf_weight * intent
            return loss, {"rec_loss": rec, "instance_loss": inst, "intent_loss": intent}

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return state.apply_gradients(grads), metrics

    def _bce_loss(self, params, batch: dict, rng: jax.Array) -> jax.Array:
        """The iclrec loss's first term alone, on the same dropout draws (`rng` = its k_rec)."""
        out = self._encode(params, batch["input"][None], rng[None])[0]
        table = params["params"]["item_embed"]["embedding"]
        return sequential.next_item_bce(out, table, batch["target"], batch["negative"])

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

    def _ce_value_and_grad(self, params, batch: dict, rng: jax.Array):
        """SASRec-CE loss of the batch (mean over target positions) and its gradient.

        With `microbatch` = m > 0 the batch is processed m sequences at a time in a `lax.scan`
        that sums the microbatches' gradients (each position weighted by 1 / the batch's
        target count, so the sum is the batch mean): the same gradient up to float rounding,
        with activations small enough to stay in the CPU's caches (~1.3x faster at B = 256,
        L = 200; BUILD_NOTES). Microbatches as `_micro_split`; microbatch j draws its dropout
        from `fold_in(rng, j)`.
        """
        cfg = self.cfg
        inputs, targets = batch["input"], batch["target"]  # int32[B, W] each
        total = jnp.maximum(jnp.sum(targets > 0), 1).astype(jnp.float32)

        def micro_loss(p, ids, tgt, key):
            out = self.model.apply(
                p, ids, deterministic=False, right_aligned=True, rngs={"dropout": key}
            )
            flat = tgt.reshape(-1)
            return sequential.chunked_softmax_ce(
                out.reshape(-1, out.shape[-1]),
                p["params"]["item_embed"]["embedding"],
                flat,
                (flat > 0) / total,
                cfg.ce_chunk,
            )

        def body(carry, xs):
            ids, tgt, j = xs
            loss, grads = jax.value_and_grad(micro_loss)(
                params, ids, tgt, jax.random.fold_in(rng, j)
            )
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        init = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        micro_in = self._micro_split(inputs)  # [n_micro, rows, W]
        xs = (micro_in, self._micro_split(targets), jnp.arange(micro_in.shape[0]))
        return jax.lax.scan(body, init, xs)[0]

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


# ----------------------------------------------------------------------------------------------
# Running the stage and its artefacts.
# ----------------------------------------------------------------------------------------------


def model_config_from(backbone, num_items: int) -> sasrec.SASRecConfig:
    """SASRecConfig from the `config.backbone` section ("pre_ln" blocks come with the original
    SASRec's FFN width D and LayerNorm eps 1e-8)."""
    block = str(backbone.get("block", "post_ln"))
    original = {"ffn_mult": 1, "ln_eps": 1e-8} if block == "pre_ln" else {}
    return sasrec.SASRecConfig(
        num_items=num_items,
        max_len=int(backbone.max_len),
        hidden=int(backbone.hidden),
        num_layers=int(backbone.num_layers),
        num_heads=int(backbone.num_heads),
        hidden_dropout=float(backbone.hidden_dropout),
        attn_dropout=float(backbone.attn_dropout),
        init_range=float(backbone.init_range),
        block=block,
        positions=str(backbone.get("positions", "from_end")),
        **original,
    )


def pretrain_config_from(section) -> PretrainConfig:
    """PretrainConfig from the `config.pretrain` section (unknown keys are an error)."""
    values = config_utils.section_values(PretrainConfig, section, "pretrain")
    if "ks" in values:
        values["ks"] = tuple(int(k) for k in values["ks"])
    if "lr_decay_epochs" in values:
        values["lr_decay_epochs"] = tuple(int(e) for e in values["lr_decay_epochs"])
    if "eval_splits" in values:
        values["eval_splits"] = tuple(str(k) for k in values["eval_splits"])
    return PretrainConfig(**values)


def run(
    sequences: Sequence[np.ndarray],
    num_items: int,
    model_cfg: sasrec.SASRecConfig,
    cfg: PretrainConfig,
    stage_dir: str | pathlib.Path,
    mesh=None,
) -> dict:
    """Trains the backbone (resuming if possible) and writes its artefacts.

    Args:
      sequences: U int arrays, each user's items in time order.
      num_items: N.
      model_cfg: SASRec settings.
      cfg: training settings.
      stage_dir: output directory (`<workdir>/pretrain`).
      mesh: data mesh; default all devices.

    Returns:
      The result dict also written to result.json.
    """
    stage_dir = pathlib.Path(stage_dir)
    mesh = mesh if mesh is not None else sharding.make_mesh()
    data = build_sequence_data(sequences, num_items, model_cfg.max_len, cfg.augment_window)
    task = PretrainTask(data, model_cfg, cfg, mesh)
    trainer = loop.Trainer(
        loop.TrainerConfig(
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            early_stop_metric=cfg.early_stop_metric,
            eval_splits=cfg.eval_splits,
            seed=cfg.seed,
        ),
        stage_dir,
        mesh,
    )
    fit = trainer.fit(task)
    best = fit.best_state
    if cfg.loss == "iclrec" and cfg.faithful_centroid_timing:
        centroids = np.asarray(jax.device_get(best.extras["centroids"]))  # start of best epoch
    else:
        centroids = task.fit_clusters(best.params).centroids  # from the best weights
    emb = task.sequence_embeddings(best.params)
    assignments = np.full(len(sequences), -1, np.int32)
    assignments[data.train_users] = np.asarray(kmeans.assign(emb, centroids))
    save_backbone(stage_dir, model_cfg, jax.device_get(best.params))
    _save_npy(stage_dir / "centroids.npy", centroids)
    _save_npy(stage_dir / "intents.npy", kmeans.intent_matrix(centroids))
    _save_npy(stage_dir / "assignments.npy", assignments)
    result = {
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "train_seconds_this_process": fit.train_seconds,
        "train_seconds_total": fit.total_seconds,  # over every resume
        "train_seconds_to_best_epoch": fit.seconds_to_best,
        "loss": cfg.loss,
        "num_intents": int(centroids.shape[0]),
        **fit.final_metrics,
    }
    fileio.write_json(stage_dir / "result.json", result)
    return result


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    with fileio.atomic_path(path) as tmp, tmp.open("wb") as f:
        np.save(f, array)


def save_backbone(stage_dir: str | pathlib.Path, model_cfg: sasrec.SASRecConfig, params) -> None:
    """Writes backbone_config.json and backbone.msgpack atomically."""
    stage_dir = pathlib.Path(stage_dir)
    fileio.write_json(stage_dir / "backbone_config.json", dataclasses.asdict(model_cfg))
    with fileio.atomic_path(stage_dir / "backbone.msgpack") as tmp:
        tmp.write_bytes(flax.serialization.to_bytes(params))


def load_backbone(stage_dir: str | pathlib.Path) -> tuple[sasrec.SASRecConfig, dict, np.ndarray]:
    """Loads (SASRecConfig, params, intents float32[K, D]) written by `run`."""
    stage_dir = pathlib.Path(stage_dir)
    if not (stage_dir / "result.json").is_file():
        raise FileNotFoundError(f"no finished pretraining in {stage_dir}; run launch/pretrain.py")
    model_cfg = sasrec.SASRecConfig(**json.loads((stage_dir / "backbone_config.json").read_text()))
    target = jax.eval_shape(functools.partial(sasrec.init_params, model_cfg), jax.random.PRNGKey(0))
    params = flax.serialization.from_bytes(target, (stage_dir / "backbone.msgpack").read_bytes())
    return model_cfg, params, np.load(stage_dir / "intents.npy")


def train_and_evaluate(config, workdir: str | pathlib.Path) -> dict:
    """The pretrain stage on `<workdir>/data` (see launch/pretrain.py)."""
    from latentcrs_jax.data import dataset

    workdir = pathlib.Path(workdir)
    ds = dataset.load(workdir / "data", config.data)
    model_cfg = model_config_from(config.backbone, ds.num_items)
    cfg = pretrain_config_from(config.pretrain)
    logging.info("pretrain %s: %d users, %d items, %s", ds.name, ds.num_users, ds.num_items, cfg)
    return run(ds.sequences(), ds.num_items, model_cfg, cfg, workdir / STAGE_DIR)
