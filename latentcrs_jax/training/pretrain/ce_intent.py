"""The intent-aligned backbone (loss="ce_intent", beyond the paper, issue 18).

SASRec-CE (`ce.CETask`'s full-softmax cross-entropy at every position) plus ICLRec's intent
term with its weight `intent_cf_weight`: K-means of the sequence embeddings at the start of
every epoch, and over C(n_views, 2) pairs of fresh augmentations each view's mean output
against the unit centroid assigned to the original sequence (`intent.IntentTask`, the same
code as loss="iclrec"; `sequential.ce_with_intent`). ICLRec's instance InfoNCE is not added:
the term under test is the one that pulls sequence representations toward their intents, so
that the K-means intents LatentCRS reads summarise the users better.

The sequence and its views are encoded together (`_encode`, microbatched under remat); the
sequence draws the dropout keys that `ce.CETask` draws, so with intent_cf_weight = 0 the step
is SASRec-CE's (up to float rounding).
"""

import jax
import optax

from latentcrs_jax.losses import sequential
from latentcrs_jax.training import loop
from latentcrs_jax.training.pretrain.intent import IntentTask


class CEIntentTask(IntentTask):
    """loss="ce_intent": SASRec-CE + intent_cf_weight * ICLRec's intent contrast."""

    def loss(self, params, batch: dict, seqs, keys, centroids) -> tuple[jax.Array, dict]:
        """The step's loss and its parts.

        Args:
          params: backbone variables.
          batch: the training batch ("input", "target", "valid", "full").
          seqs, keys: `sequences_and_views` of the step.
          centroids: float32[K, D] this epoch's K-means centroids.

        Returns:
          (loss, {"rec_loss": CE, "intent_loss": the intent term summed over pairs}).
        """
        cfg = self.cfg
        outs = self._encode(params, seqs, keys)  # [1 + 2P, B, L, D]
        loss, ce, intent = sequential.ce_with_intent(
            outs[0],
            outs[1:].mean(2),
            params["params"]["item_embed"]["embedding"],
            batch["target"],
            self.assigned_centroids(outs[0], centroids),
            cfg.intent_cf_weight,
            cfg.temperature,
            batch["valid"],
            cfg.ce_chunk,
        )
        return loss, {"rec_loss": ce, "intent_loss": intent}

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        seqs, keys = self.sequences_and_views(state, batch)
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state.params, batch, seqs, keys, state.extras["centroids"]
        )
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return state.apply_gradients(grads), metrics
