"""ICLRec's next-item BCE alone (loss="bce"): SASRec as ICLRec trains it, without the
contrastive terms (the ablation that shows what they add). One sampled negative per target,
drawn on the host (`data.sample_negatives`).
"""

import jax
import optax

from latentcrs_jax.losses import sequential
from latentcrs_jax.training import loop
from latentcrs_jax.training.pretrain.task import PretrainTask


class BCETask(PretrainTask):
    """loss="bce": the iclrec loss's first term, on the same dropout draws (its k_rec)."""

    uses_negatives = True

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        k_rec, _, _ = self.step_keys(state)
        loss, grads = jax.value_and_grad(self._bce_loss)(state.params, batch, k_rec)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "rec_loss": loss}
        return state.apply_gradients(grads), metrics

    def _bce_loss(self, params, batch: dict, rng: jax.Array) -> jax.Array:
        """The iclrec loss's first term alone, on the same dropout draws (`rng` = its k_rec)."""
        out = self._encode(params, batch["input"][None], rng[None])[0]
        table = params["params"]["item_embed"]["embedding"]
        return sequential.next_item_bce(out, table, batch["target"], batch["negative"])
