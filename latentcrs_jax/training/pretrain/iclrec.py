"""ICLRec's backbone loss (docs/method.md 2.2, ICLRec `trainers.py`).

Next-item BCE with one negative per position + over C(n_views, 2) pairs of fresh
augmentations, cf_weight * instance InfoNCE (flattened outputs) + intent_cf_weight * intent
contrast (mean outputs vs the centroid assigned to the original sequence's train-mode mean).
K-means runs at the start of every epoch over the eval-mode mean outputs of all training
inputs. Deviation (documented in BUILD_NOTES): each augmented view is encoded once and used by
both contrastive losses; the authors encode the views twice (separate dropout draws).
The views are drawn with `augment.random_augment_suffix` (the kept last L columns of an
augmentation of the whole S[:-3], same distribution as augmenting everything then slicing).
"""

import itertools
import time

import jax
import jax.numpy as jnp
import optax
from absl import logging

from latentcrs_jax.data import augment
from latentcrs_jax.losses import sequential
from latentcrs_jax.training import kmeans, loop, sharding
from latentcrs_jax.training.pretrain.task import PretrainTask


class ICLRecTask(PretrainTask):
    """loss="iclrec": next-item BCE + instance and intent contrast, K-means every epoch."""

    uses_negatives = True
    uses_full = True
    block_causal = False

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

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        cfg = self.cfg
        k_rec, k_views, k_aug = self.step_keys(state)
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
