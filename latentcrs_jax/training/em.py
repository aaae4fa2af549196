"""The three EM phases of LatentCRS as `loop.Task`s (docs/method.md 3.3-3.5).

Vocabulary: a pipeline *stage* (here the train stage, `em_stage.py`) runs EM *phases*; a phase
is one training run whose epochs are made of *passes*, an E pass (train q) and/or an M pass
(train the prior).

Phases (`EMPhase`): "posterior" trains q alone as a recommender (E pass, rank loss only);
"prior" trains the prior with q fixed (M pass); "em" alternates an E pass and an M pass every
epoch. Baselines and ablations are the same tasks with other weights (see `PHASE_PLANS`).

State: params {"posterior", "prior"}; one Adam per network (opt_state {"posterior", "prior"}),
updated only in its own pass, as the authors' single torch Adam skips parameters without a
gradient. Frozen inputs live in `extras`: the item table E [N+1, d] and, in
`faithful_backbone` mode, the backbone's variables.

The E-step's Bayes target needs log Z_m = logsumexp_y s(m, y) over all items, which depends
only on the prior, frozen during the E pass: it is computed once per epoch (`on_epoch_start`,
before the E pass) into `extras["log_z"]` instead of once per step, whenever the E pass comes
before the epoch's M pass (as in every phase plan).

Switches beyond the paper (issue 18; all off by default, `EM_NEUTRAL` holds their off values):
`prior_temperature` / `prior_top_k` sharpen p(m|u,x), `m_entropy_weight` adds the prior's
entropy to the M-step loss, `residual_weight` adds beta h_u . e_y and `text_item_weight` a
learned gamma cos(x, t_y) (initialised at the weight; needs the item-text embeddings) to the
prior's score S(u, x, y), in training and evaluation (models/latentcrs.py).
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from latentcrs_jax.evaluation import ranking
from latentcrs_jax.losses import em as em_losses
from latentcrs_jax.models import latentcrs, sasrec
from latentcrs_jax.training import em_data, loop, sharding
from latentcrs_jax.training.em_config import (  # noqa: F401  (the phases' settings, re-exported)
    EM_NEUTRAL,
    EM_SPEED_ONLY,
    HEADS,
    PASS_HEAD,
    PHASE_PLANS,
    EMConfig,
    EMPhase,
    main_plan,
)


def _per_network_adam(learning_rate) -> optax.GradientTransformation:
    """Adam(0.9, 0.999, eps 1e-8) with one state per network (init only; see `_update`)."""
    adam = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)

    def init(params):
        return {name: adam.init(p) for name, p in params.items()}

    def update(updates, state, params=None):
        raise NotImplementedError("update one network at a time with EMTask._update")

    return optax.GradientTransformation(init, update), adam


class EMTask:
    """One EM phase as a `loop.Task` with passes."""

    def __init__(
        self,
        cfg: EMConfig,
        phase: EMPhase,
        splits: dict[str, em_data.SplitArrays],
        item_emb: np.ndarray,
        intents: np.ndarray,
        backbone: tuple[sasrec.SASRecConfig, Any] | None,
        mesh,
        init_params: dict | None = None,
        item_text: np.ndarray | None = None,
    ):
        """Builds the task.

        Args:
          cfg: EM settings (the phase's overrides are applied here).
          phase: the phase.
          splits: "train", "valid", "test" arrays.
          item_emb: float32[N+1, d] frozen item table.
          intents: float32[K, d] L2-normalised centroids (initial intent matrices).
          backbone: (config, variables) of the frozen SASRec (for `faithful_backbone`).
          mesh: the data mesh.
          init_params: params of the phase named by `phase.init_from`, or None.
          item_text: float32[N+1, D_x] item-text embeddings (needed by `text_item_weight`).
        """
        cfg = dataclasses.replace(cfg, **dict(phase.overrides))
        self.cfg, self.phase, self.splits, self.mesh = cfg, phase, splits, mesh
        self.passes = phase.passes
        if phase.stop_head not in self.trained_heads:
            raise ValueError(
                f"phase {phase.name!r} stops on the {phase.stop_head} head, which its passes "
                f"{phase.passes} never train"
            )
        self.item_emb = np.asarray(item_emb, np.float32)
        self.posterior = latentcrs.Posterior(jnp.asarray(intents))
        self.prior = latentcrs.Prior(jnp.asarray(intents), cfg.prior_config)
        self.backbone_cfg, self.backbone_params = backbone if backbone else (None, None)
        if cfg.faithful_backbone and backbone is None:
            raise ValueError("faithful_backbone needs the backbone variables")
        self.text_item = cfg.prior_config.text_item
        if self.text_item and item_text is None:
            raise ValueError("text_item_weight needs the item-text embeddings")
        self.item_text = np.asarray(item_text, np.float32) if self.text_item else None
        self.init_params = init_params
        self.tie_item_intent = not cfg.faithful_same_y_m and phase.init_from != ""
        sharding.check_batch_size(cfg.batch_size, mesh)
        sharding.check_batch_size(cfg.eval_batch_size, mesh)
        repeats = 6 if cfg.faithful_duplicates else 1  # the authors' 6x train file (7.1)
        self._train_rows = np.tile(np.arange(len(splits["train"])), repeats)
        steps = -(-len(self._train_rows) // cfg.batch_size)
        self._steps_per_pass = steps
        if cfg.faithful_lr:
            schedule = cfg.learning_rate  # the authors' scheduler never took effect (7.2)
        else:
            schedule = optax.linear_schedule(
                cfg.learning_rate,
                cfg.learning_rate * cfg.lr_end_factor,
                cfg.lr_decay_epochs * steps,
            )
        self.tx, self._adam = _per_network_adam(schedule)
        # log Z of the E-step target, cached per epoch when the E pass precedes any M pass.
        passes = phase.passes
        needs_log_z = bool(cfg.e_kl_weight) and not cfg.faithful_e_target and "E" in passes
        e_first = needs_log_z and ("M" not in passes or passes.index("E") < passes.index("M"))
        self._cache_log_z = e_first
        self._log_z_fn = jax.jit(self._log_normaliser, out_shardings=sharding.replicated(mesh))
        # Keys of a train batch: what the steps read (+ "valid" for the Trainer).
        self._batch_keys = ("h", "x", "target", "candidates")
        if cfg.faithful_backbone:
            self._batch_keys += ("history",)

    # -- state --------------------------------------------------------------------------------

    def create_state(self, rng: jax.Array) -> loop.TrainState:
        init_rng, step_rng = jax.random.split(rng)
        k_post, k_prior = jax.random.split(init_rng)
        d = self.item_emb.shape[1]
        h = jnp.zeros((1, d))
        x = jnp.zeros((1, self.splits["train"].x.shape[1]))
        params = {
            "posterior": self.posterior.init(k_post, h),
            "prior": self.prior.init(k_prior, h, x, deterministic=True),
        }
        if self.init_params is not None:
            for name in ("posterior", "prior"):
                if self.init_params.get(name) is not None and self._inherits(name):
                    params[name] = jax.tree.map(jnp.asarray, self.init_params[name])
        if self.tie_item_intent and self.phase.init_from == "posterior":
            # same_y_m: p(y|m) uses the posterior's value projection, frozen in the M-step.
            value = params["posterior"]["params"]["value"]
            params["prior"]["params"]["item_intent"] = jax.tree.map(jnp.asarray, value)
        extras = {"item_emb": jnp.asarray(self.item_emb)}
        if self.text_item:
            extras["item_text"] = jnp.asarray(self.item_text)
        if self.cfg.faithful_backbone:
            extras["backbone"] = jax.tree.map(jnp.asarray, self.backbone_params)
        if self._cache_log_z:
            # Inherited params and the item table are constants of the jitted create_state: the
            # barrier keeps XLA from constant-folding the [K, N] product at compile time (> 3 s
            # on ML-1M); the value is the same.
            prior, emb = jax.lax.optimization_barrier((params["prior"], extras["item_emb"]))
            extras["log_z"] = self._log_normaliser(prior, emb)
        return loop.TrainState.create(params, self.tx, step_rng, extras)

    def _inherits(self, name: str) -> bool:
        # Phases after "posterior" inherit the posterior; "em" phases also inherit the prior.
        return name == "posterior" or "E" in self.passes

    # -- host data ----------------------------------------------------------------------------

    def num_train_batches(self) -> int:
        return self._steps_per_pass * len(self.passes)

    def train_batches(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        train, bs = self.splits["train"], self.cfg.batch_size
        for p, em_pass in enumerate(self.passes):
            order = em_data.epoch_order(len(self._train_rows), bs, self.cfg.seed, epoch, p)
            rows = self._train_rows[order]
            for start in range(0, len(rows), bs):
                batch = train.rows(rows[start : start + bs], self._batch_keys)
                batch["valid"] = np.ones(bs, bool)
                batch["pass"] = em_pass
                yield batch

    def eval_batches(self, split: str):
        s = self.splits[split]
        arrays = {"h": s.h, "x": s.x, "history": s.history, "target": s.target}
        return ranking.padded_batches(arrays, self.cfg.eval_batch_size)

    def on_epoch_start(self, state: loop.TrainState, epoch: int) -> loop.TrainState:
        """Refreshes the cached log Z from the prior the coming E pass will use."""
        if not self._cache_log_z:
            return state
        log_z = self._log_z_fn(state.params["prior"], state.extras["item_emb"])
        return state.replace(extras={**state.extras, "log_z": log_z})

    # -- pieces shared by the steps -----------------------------------------------------------

    def _user_state(self, state, batch, rng, *, train: bool) -> jax.Array:
        """h_u: cached (corrected) or recomputed with dropout (faithful_backbone, train)."""
        if not (self.cfg.faithful_backbone and train):
            return batch["h"]
        return latentcrs.backbone_user_state(
            self.backbone_cfg,
            state.extras["backbone"],
            batch["history"],
            deterministic=False,
            rng=rng,
        )

    def _log_normaliser(self, prior_params, emb: jax.Array) -> jax.Array:
        """log Z_m = logsumexp over real items y of s(m, y): float32[K]."""
        vecs = self.prior.apply(prior_params, method="intent_item_vectors")  # [K, d]
        return jax.nn.logsumexp(vecs @ emb[1:].T, axis=-1)

    def _rank_logits(self, user, cand, emb, target, extra=None) -> jax.Array:
        """Logits whose column 0 is the target: over the sampled candidates, float32[B, C], or
        (`full_softmax`) over every real item, float32[B, N+1] (PAD and the target's own column
        set to -inf, the target moved to column 0). `extra` is added to the scores first
        (float32[B, C] or, with `full_softmax`, float32[B, N+1])."""
        if not self.cfg.full_softmax:
            logits = jnp.einsum("bd,bcd->bc", user, cand)
            return logits if extra is None else logits + extra
        scores = user @ emb.T  # [B, N+1]
        if extra is not None:
            scores = scores + extra
        positive = jnp.take_along_axis(scores, target[:, None], axis=1)
        ids = jnp.arange(scores.shape[1])[None, :]
        scores = jnp.where((ids == 0) | (ids == target[:, None]), -jnp.inf, scores)
        return jnp.concatenate([positive, scores], axis=1)

    def _update(self, state, name: str, grads) -> loop.TrainState:
        updates, net_state = self._adam.update(grads, state.opt_state[name], state.params[name])
        params = {**state.params, name: optax.apply_updates(state.params[name], updates)}
        opt_state = {**state.opt_state, name: net_state}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state)

    # -- steps --------------------------------------------------------------------------------

    def train_step(self, state, batch, em_pass: str):
        """One E or M step (jitted once per pass by the Trainer)."""
        if em_pass == "E":
            return self._e_step(state, batch)
        return self._m_step(state, batch)

    def _e_step(self, state, batch):
        cfg = self.cfg
        emb = state.extras["item_emb"]
        rng = jax.random.fold_in(state.rng, state.step)
        prior_params = state.params["prior"]
        h_eval = batch["h"]
        cand = jnp.take(emb, batch["candidates"], axis=0)  # [B, C, d]
        target = None
        if cfg.e_kl_weight:
            p = self.prior.apply(
                prior_params, h_eval, batch["x"], deterministic=True, method="distribution"
            )
            vecs = self.prior.apply(prior_params, method="intent_item_vectors")  # [K, d]
            s_pos = cand[:, 0] @ vecs.T  # s(m, y+): [B, K]
            log_z = None
            if not cfg.faithful_e_target:  # [K]; the prior is frozen for the whole E pass
                log_z = (
                    state.extras["log_z"]
                    if self._cache_log_z
                    else self._log_normaliser(prior_params, emb)
                )
            target = em_losses.e_step_target(p, s_pos, log_z, bayes=not cfg.faithful_e_target)
        h = self._user_state(state, batch, rng, train=True)

        def loss_fn(post_params):
            q, user = self.posterior.apply(post_params, h)
            logits = self._rank_logits(user, cand, emb, batch["target"])
            tgt = target if target is not None else q
            return em_losses.e_step_loss(
                q,
                tgt,
                logits,
                kl_weight=cfg.e_kl_weight,
                rank_weight=cfg.e_rank_weight,
                temperature=cfg.temperature,
            )

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["posterior"])
        state = self._update(state, "posterior", grads)
        terms["grad_norm"] = optax.tree_utils.tree_norm(grads)
        return state, terms

    def _m_step(self, state, batch):
        cfg = self.cfg
        emb = state.extras["item_emb"]
        rng = jax.random.fold_in(state.rng, state.step)
        k_backbone, k_dropout = jax.random.split(rng)
        q, _ = self.posterior.apply(state.params["posterior"], batch["h"])
        h = self._user_state(state, batch, k_backbone, train=True)
        cand = jnp.take(emb, batch["candidates"], axis=0)  # [B, C, d]

        def loss_fn(prior_params):
            p, user = self.prior.apply(
                prior_params, h, batch["x"], deterministic=False, rngs={"dropout": k_dropout}
            )
            extra = None
            if self.text_item:  # gamma cos(x, t_y) on the candidates (or every item)
                text = state.extras["item_text"]
                if not cfg.full_softmax:
                    text = jnp.take(text, batch["candidates"], axis=0)  # [B, C, D_x]
                extra = self.prior.apply(prior_params, batch["x"], text, method="text_item_scores")
            mix_logits = self._rank_logits(user, cand, emb, batch["target"], extra)
            s_cand = None
            if cfg.m_nce_weight:
                vecs = self.prior.apply(prior_params, method="intent_item_vectors")
                s_cand = jnp.einsum("kd,bcd->bkc", vecs, cand)
            return em_losses.m_step_loss(
                q,
                p,
                s_cand,
                mix_logits,
                kl_weight=cfg.m_kl_weight,
                nce_weight=cfg.m_nce_weight,
                rec_weight=cfg.m_rec_weight,
                temperature=cfg.temperature,
                faithful_nce=cfg.faithful_nce,
                entropy_weight=cfg.m_entropy_weight,
            )

        (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params["prior"])
        if self.tie_item_intent:
            grads["params"]["item_intent"] = jax.tree.map(
                jnp.zeros_like, grads["params"]["item_intent"]
            )
        state = self._update(state, "prior", grads)
        terms["grad_norm"] = optax.tree_utils.tree_norm(grads)
        return state, terms

    # -- evaluation ---------------------------------------------------------------------------

    def head_vectors(self, params, batch, heads=HEADS) -> dict[str, jax.Array]:
        """The user vector of each of `heads`, float32[B, d]; score(y) = vector . e_y."""
        out = {}
        for head in heads:
            if head == "prior":
                _, out[head] = self.prior.apply(
                    params["prior"], batch["h"], batch["x"], deterministic=True
                )
            elif head == "posterior":
                _, out[head] = self.posterior.apply(params["posterior"], batch["h"])
            else:
                out[head] = batch["h"]
        return out

    @property
    def trained_heads(self) -> tuple[str, ...]:
        """The heads this phase's passes change (E: the posterior; M: the prior); the others
        (and the backbone's, always frozen here) score the same in every epoch."""
        return tuple(head for p, head in PASS_HEAD.items() if p in self.passes)

    def _head_scores(self, state, batch, head: str, vec: jax.Array, ids=None) -> jax.Array:
        """float32[B, C] scores of ids int32[C] (None: all N+1), the prior's text term included."""
        emb = state.extras["item_emb"]
        scores = vec @ (emb if ids is None else jnp.take(emb, ids, axis=0)).T
        if head == "prior" and self.text_item:
            text = state.extras["item_text"]
            scores = scores + self.prior.apply(
                state.params["prior"],
                batch["x"],
                text if ids is None else jnp.take(text, ids, axis=0),
                method="text_item_scores",
            )
        return scores

    def eval_step(self, state, batch) -> ranking.Sums:
        """Every head's full-ranking sums (see `_eval_heads`)."""
        return self._eval_heads(state, batch, HEADS)

    def epoch_eval_step(self, state, batch) -> ranking.Sums:
        """The trained heads' sums: the per-epoch evaluation (the Trainer takes the frozen
        heads' metrics from its first full evaluation; they cannot change)."""
        return self._eval_heads(state, batch, self.trained_heads)

    def _eval_heads(self, state, batch, heads) -> ranking.Sums:
        """The full-ranking sums of `heads`; with `eval_item_chunk`, items are scored that
        many at a time under a running top-k (never the [B, N+1] score matrix)."""
        num_ids = state.extras["item_emb"].shape[0]
        out = {}
        for head, vec in self.head_vectors(state.params, batch, heads).items():
            if self.cfg.eval_item_chunk:
                top_scores, top_ids = ranking.chunked_top_k(
                    lambda ids, head=head, vec=vec: self._head_scores(state, batch, head, vec, ids),
                    num_ids,
                    vec.shape[0],
                    batch["history"],
                    chunk_size=self.cfg.eval_item_chunk,
                    mask_history=self.cfg.mask_history,
                )
                sums = ranking.metrics_from_top_k(
                    top_ids, top_scores, batch["target"], batch["valid"]
                )
            else:
                sums = ranking.full_ranking_metrics(
                    self._head_scores(state, batch, head, vec),
                    batch["target"],
                    batch["history"],
                    batch["valid"],
                    mask_history=self.cfg.mask_history,
                )
            out.update({f"{head}/{k}": v for k, v in sums.items()})
        return out
