"""What the losses with ICLRec's intent term share (`iclrec.ICLRecTask`, `ce_intent.CEIntentTask`).

K-means over the eval-mode mean outputs of all training inputs at the start of every epoch
(the centroids ride in `TrainState.extras`), C(n_views, 2) pairs of fresh augmentations of each
batch (`augment.random_augment_suffix`), and the intent term: each pair's mean-pooled views
against the unit centroid assigned to the original sequence's train-mode mean
(`sequential.intent_contrast_pairs`). The intent term pools over every position, padding
included (as ICLRec), so these tasks use plain causal attention and full-width batches.
"""

import itertools
import time

import jax
import jax.numpy as jnp
from absl import logging

from latentcrs_jax.data import augment
from latentcrs_jax.losses import sequential
from latentcrs_jax.training import kmeans, loop, sharding
from latentcrs_jax.training.pretrain.task import PretrainTask


class IntentTask(PretrainTask):
    """A backbone task with ICLRec's per-epoch K-means and augmented views."""

    uses_full = True
    block_causal = False
    # The final intents may be the centroids of the best epoch's start (faithful timing).
    clusters_each_epoch = True

    def __init__(self, data, model_cfg, cfg, mesh):
        if cfg.num_intents > len(data.train_users):
            raise ValueError(
                f"num_intents={cfg.num_intents} exceeds the {len(data.train_users)} training "
                "sequences; lower pretrain.num_intents"
            )
        super().__init__(data, model_cfg, cfg, mesh)

    def initial_extras(self) -> dict:
        """Zero centroids [K, D]; each epoch's K-means replaces them."""
        return {"centroids": jnp.zeros((self.cfg.num_intents, self.model_cfg.hidden))}

    def on_epoch_start(self, state: loop.TrainState, epoch: int) -> loop.TrainState:
        t0 = time.perf_counter()
        res = self.fit_clusters(state.params)
        logging.info(
            "epoch %d: K-means K=%d in %.1fs", epoch, self.cfg.num_intents, time.perf_counter() - t0
        )
        cents = sharding.replicate(jnp.asarray(res.centroids), self.mesh)
        return state.replace(extras={"centroids": cents})

    def num_pairs(self) -> int:
        return len(list(itertools.combinations(range(self.cfg.n_views), 2)))

    def sequences_and_views(self, state: loop.TrainState, batch: dict):
        """The batch's inputs and its fresh views, with one dropout key each.

        Returns:
          (seqs int32[1 + 2P, B, L], keys [1 + 2P]): seqs[0] is the batch's input (dropout
          k_rec), pair p is (seqs[1 + 2p], seqs[2 + 2p]).
        """
        k_rec, k_views, k_aug = self.step_keys(state)
        aug_keys = jax.random.split(k_aug, 2 * self.num_pairs())
        seq_len = batch["input"].shape[1]
        views = jnp.stack(
            [augment.random_augment_suffix(k, batch["full"], seq_len) for k in aug_keys]
        )  # [2P, B, L]
        seqs = jnp.concatenate([batch["input"][None], views])
        keys = jnp.concatenate([k_rec[None], jax.random.split(k_views, views.shape[0])])
        return seqs, keys

    @staticmethod
    def assigned_centroids(out: jax.Array, centroids: jax.Array) -> jax.Array:
        """float32[B, D]: the unit centroid nearest each row's (stop-gradient) mean output.

        Args:
          out: float32[B, L, D] train-mode outputs of the original sequences.
          centroids: float32[K, D] this epoch's K-means centroids.
        """
        ids = kmeans.assign(jax.lax.stop_gradient(out.mean(1)), centroids)
        norm = jnp.maximum(jnp.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        return (centroids / norm)[ids]

    def intent_term(self, outs: jax.Array, centroids: jax.Array, valid: jax.Array) -> jax.Array:
        """ICLRec's intent contrast summed over pairs, from `_encode`'s [1 + 2P, B, L, D]."""
        assigned = self.assigned_centroids(outs[0], centroids)
        return sequential.intent_contrast_pairs(
            outs[1:].mean(2), assigned, self.cfg.temperature, valid
        )
