"""SASRec-CE (loss="ce"): softmax cross-entropy over all items at every position, nothing else."""

import jax
import jax.numpy as jnp
import optax

from latentcrs_jax.losses import sequential
from latentcrs_jax.training import loop
from latentcrs_jax.training.pretrain.task import PretrainTask


class CETask(PretrainTask):
    """loss="ce": full-softmax cross-entropy, chunked over items, microbatched over rows."""

    def train_step(self, state: loop.TrainState, batch: dict) -> tuple[loop.TrainState, dict]:
        k_rec, _, _ = self.step_keys(state)
        loss, grads = self._ce_value_and_grad(state.params, batch, k_rec)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "rec_loss": loss}
        return state.apply_gradients(grads), metrics

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
