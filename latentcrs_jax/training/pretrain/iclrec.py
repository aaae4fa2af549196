"""ICLRec's backbone loss (docs/method.md 2.2, ICLRec `trainers.py`).

Next-item BCE with one negative per position + over C(n_views, 2) pairs of fresh
augmentations, cf_weight * instance InfoNCE (flattened outputs) + intent_cf_weight * intent
contrast (mean outputs vs the centroid assigned to the original sequence's train-mode mean).
K-means runs at the start of every epoch over the eval-mode mean outputs of all training
inputs (`intent.IntentTask`, shared with loss="ce_intent"). Deviation (documented in
BUILD_NOTES): each augmented view is encoded once and used by both contrastive losses; the
authors encode the views twice (separate dropout draws). The views are drawn with
`augment.random_augment_suffix` (the kept last L columns of an augmentation of the whole
S[:-3], same distribution as augmenting everything then slicing).
"""

import jax
import optax

from latentcrs_jax.losses import sequential
from latentcrs_jax.training import loop
from latentcrs_jax.training.pretrain.intent import IntentTask


class ICLRecTask(IntentTask):
    """loss="iclrec": next-item BCE + instance and intent contrast, K-means every epoch."""

    uses_negatives = True

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        cfg = self.cfg
        valid = batch["valid"]
        seqs, keys = self.sequences_and_views(state, batch)  # [1 + 2P, B, L], [1 + 2P]

        def loss_fn(params):
            outs = self._encode(params, seqs, keys)  # [1 + 2P, B, L, D]
            out, b = outs[0], outs.shape[1]
            table = params["params"]["item_embed"]["embedding"]
            rec = sequential.next_item_bce(out, table, batch["target"], batch["negative"])
            inst = 0.0
            for p in range(self.num_pairs()):
                va, vb = outs[1 + 2 * p], outs[2 + 2 * p]
                inst += sequential.info_nce(
                    va.reshape(b, -1), vb.reshape(b, -1), cfg.temperature, valid
                )
            intent = self.intent_term(outs, state.extras["centroids"], valid)
            loss = rec + cfg.cf_weight * inst + cfg.intent_cf_weight * intent
            return loss, {"rec_loss": rec, "instance_loss": inst, "intent_loss": intent}

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return state.apply_gradients(grads), metrics
