"""The EM tasks through the real Trainer on synthetic data: phases, freezing, ties, learning."""

import json

import jax
import numpy as np
import pytest
from em_helpers import small_config, synthetic_inputs

from latentcrs_jax.training import em, loop, sharding


def _fit(tmp_path, cfg, stage, init=None, inputs=None, task_cls=em.EMTask):
    splits, item_emb, intents = inputs or synthetic_inputs()
    mesh = sharding.make_mesh()
    task = task_cls(cfg, stage, splits, item_emb, intents, None, mesh, init)
    trainer = loop.Trainer(
        loop.TrainerConfig(
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            early_stop_metric=f"valid/{stage.stop_head}/ndcg@10",
            seed=cfg.seed,
        ),
        tmp_path,
        mesh,
    )
    return task, trainer, trainer.fit(task)


def _jit_step(task, em_pass):
    """`task.train_step` for one pass, jitted as the Trainer does; a new function on every call,
    so it is traced with the task's current settings."""
    return jax.jit(lambda state, batch: task.train_step(state, batch, em_pass))


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_three_stages_freeze_the_other_network_and_learn(tmp_path):
    cfg = small_config(max_epochs=10)
    posterior, prior, em_stage = em.main_plan()
    task, trainer, fit1 = _fit(tmp_path / "posterior", cfg, posterior)
    init = jax.device_get(fit1.best_state.params)
    # The posterior learns: chance HIT@10 is about 10/36 here.
    assert fit1.final_metrics["valid/posterior/hit@10"] > 0.4
    task2, trainer2, fit2 = _fit(tmp_path / "prior", cfg, prior, init=init)
    p2 = jax.device_get(fit2.best_state.params)
    assert _leaves_equal(p2["posterior"], init["posterior"])  # q fixed in the M-step
    # same_y_m (corrected default): the prior's item_intent is the posterior's value, frozen.
    assert _leaves_equal(p2["prior"]["params"]["item_intent"], init["posterior"]["params"]["value"])
    assert trainer2.train_step_traces == 1
    task3, trainer3, fit3 = _fit(tmp_path / "em", cfg, em_stage, init=p2)
    assert trainer3.train_step_traces == 2  # one compile per phase
    rows = [json.loads(line) for line in (tmp_path / "em" / "metrics.jsonl").open()]
    assert "train/E/kl" in rows[0] and "train/M/rec" in rows[0] and "train/M/nce" in rows[0]
    assert fit3.final_metrics["valid/prior/hit@10"] > 0.4


@pytest.mark.slow
def test_faithful_same_y_m_trains_item_intent(tmp_path):
    cfg = small_config(max_epochs=1, faithful_same_y_m=True)
    posterior, prior, _ = em.main_plan()
    _, _, fit1 = _fit(tmp_path / "posterior", cfg, posterior)
    init = jax.device_get(fit1.best_state.params)
    _, _, fit2 = _fit(tmp_path / "prior", cfg, prior, init=init)
    p2 = jax.device_get(fit2.best_state.params)
    assert not _leaves_equal(
        p2["prior"]["params"]["item_intent"], init["posterior"]["params"]["value"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        dict(faithful_e_target=True, faithful_nce=True, faithful_layer_norm=True),
        dict(faithful_lr=True, faithful_duplicates=True),
    ],
)
def test_faithful_switches_run(tmp_path, overrides):
    cfg = small_config(max_epochs=1, **overrides)
    _, _, fit = _fit(tmp_path, cfg, em.main_plan()[2])
    assert np.isfinite(fit.final_metrics["valid/prior/ndcg@10"])


@pytest.mark.slow
def test_fusion_baseline_has_no_kl(tmp_path):
    cfg = small_config(max_epochs=2)
    (stage,) = em.PHASE_PLANS["fusion"]
    _fit(tmp_path, cfg, stage)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert "train/M/nce" not in rows[0]
    assert rows[0]["train/M/loss"] == pytest.approx(5.0 * rows[0]["train/M/rec"], rel=1e-5)


def test_full_softmax_logits_are_a_softmax_over_every_real_item():
    splits, item_emb, intents = synthetic_inputs()
    task = em.EMTask(
        small_config(full_softmax=True),
        em.main_plan()[0],
        splits,
        item_emb,
        intents,
        None,
        sharding.make_mesh(),
    )
    rng = np.random.default_rng(0)
    user = rng.normal(size=(3, item_emb.shape[1])).astype(np.float32)
    target = np.array([1, 7, 40], np.int32)
    logits = np.asarray(task._rank_logits(user, None, item_emb, target))
    scores = user @ item_emb[1:].T  # real items only
    expected = -(scores[np.arange(3), target - 1] - np.log(np.exp(scores).sum(1)))
    m = logits.max(1)
    got = -(logits[:, 0] - m - np.log(np.exp(logits - m[:, None]).sum(1)))  # -log softmax[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.slow
def test_log_z_is_cached_per_epoch_and_equals_the_in_step_value():
    splits, item_emb, intents = synthetic_inputs()
    mesh = sharding.make_mesh()
    task = em.EMTask(small_config(), em.main_plan()[2], splits, item_emb, intents, None, mesh)
    assert task._cache_log_z
    state = jax.jit(task.create_state)(jax.random.key(0))

    def log_z(params):
        vecs = np.asarray(task.prior.apply(params, method="intent_item_vectors"), np.float64)
        s = vecs @ item_emb[1:].T.astype(np.float64)
        m = s.max(1)
        return m + np.log(np.exp(s - m[:, None]).sum(1))

    np.testing.assert_allclose(state.extras["log_z"], log_z(state.params["prior"]), rtol=1e-5)
    batch = next(task.train_batches(0))
    assert batch.pop("pass") == "E" and "user" not in batch and "history" not in batch
    placed = sharding.place_batch(batch, mesh)
    _, cached = _jit_step(task, "E")(state, placed)
    task._cache_log_z = False  # computed inside the step instead
    _, fresh = _jit_step(task, "E")(state, placed)
    task._cache_log_z = True
    for k in ("kl", "rank", "loss"):
        np.testing.assert_allclose(cached[k], fresh[k], rtol=1e-5)
    # After an M step changes the prior, the next epoch's refresh follows it.
    moved, _ = _jit_step(task, "M")(state, placed)
    assert not np.allclose(log_z(moved.params["prior"]), state.extras["log_z"])
    refreshed = task.on_epoch_start(moved, 1)
    np.testing.assert_allclose(refreshed.extras["log_z"], log_z(moved.params["prior"]), rtol=1e-5)


def test_log_z_not_cached_when_unused_or_after_an_m_pass():
    splits, item_emb, intents = synthetic_inputs()
    mesh = sharding.make_mesh()

    def cached(stage, **overrides):
        cfg = small_config(**overrides)
        return em.EMTask(cfg, stage, splits, item_emb, intents, None, mesh)._cache_log_z

    posterior, prior, em_stage = em.main_plan()
    assert not cached(posterior)  # the posterior stage has no KL term
    assert not cached(prior)
    assert not cached(em_stage, faithful_e_target=True)
    m_first = em.EMPhase("m_first", ("M", "E"), "prior")
    assert not cached(m_first)


def _text_inputs():
    splits, item_emb, intents = synthetic_inputs()
    rng = np.random.default_rng(7)
    item_text = rng.normal(size=(item_emb.shape[0], splits["train"].x.shape[1]))
    return splits, item_emb, intents, item_text.astype(np.float32)


@pytest.mark.slow
def test_item_text_and_residual_terms_enter_training_and_evaluation(tmp_path):
    splits, item_emb, intents, item_text = _text_inputs()
    cfg = small_config(
        max_epochs=1, residual_weight=0.5, text_item_weight=2.0, prior_temperature=0.5
    )
    stage = em.main_plan()[2]
    with pytest.raises(ValueError, match="item-text"):
        em.EMTask(cfg, stage, splits, item_emb, intents, None, sharding.make_mesh())
    task = em.EMTask(
        cfg, stage, splits, item_emb, intents, None, sharding.make_mesh(), item_text=item_text
    )
    state = jax.jit(task.create_state)(jax.random.key(0))
    batch = next(iter(task.eval_batches("valid")))
    # The prior head's full-ranking scores: (mixture + beta h) . e_y + gamma x . t_y.
    prior = state.params["prior"]
    p = task.prior.apply(prior, batch["h"], batch["x"], deterministic=True, method="distribution")
    vecs = task.prior.apply(prior, method="intent_item_vectors")
    want = (np.asarray(p) @ np.asarray(vecs) + 0.5 * batch["h"]) @ item_emb.T
    want = want + 2.0 * batch["x"] @ item_text.T
    sums = jax.jit(task.eval_step)(state, batch)
    ref = ranking_sums(want, batch, cfg.mask_history)
    np.testing.assert_allclose(sums["prior/ndcg@10"][0], ref["ndcg@10"][0], rtol=1e-4)
    # The M step trains gamma.
    m_batch = next(b for b in task.train_batches(0) if b["pass"] == "M")
    new_state, terms = _jit_step(task, "M")(
        state, {k: v for k, v in m_batch.items() if k != "pass"}
    )
    assert float(new_state.params["prior"]["params"]["text_item_log_scale"]) != 0.0
    assert np.isfinite(float(terms["loss"]))


@pytest.mark.parametrize("text, mask", [(False, True), (True, True), (True, False)])
def test_item_chunked_eval_step_equals_the_full_one(text, mask):
    # Scoring 7 of the 41 item ids at a time under a running top-k (eval_item_chunk) must give
    # every head's full-ranking sums, the prior's item-text and residual terms included.
    splits, item_emb, intents, item_text = _text_inputs()
    extra = {"residual_weight": 0.5, "text_item_weight": 2.0} if text else {}
    sums = []
    for chunk in (0, 7):
        cfg = small_config(eval_item_chunk=chunk, mask_history=mask, **extra)
        task = em.EMTask(
            cfg, em.main_plan()[2], splits, item_emb, intents, None, sharding.make_mesh(),
            item_text=item_text if text else None,
        )  # fmt: skip
        state = task.create_state(jax.random.key(0))
        step = jax.jit(task.eval_step)
        sums.append([jax.device_get(step(state, b)) for b in task.eval_batches("valid")])
    for got, want in zip(sums[1], sums[0]):
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, err_msg=k)
    assert sum(float(s["prior/hit@20"][0]) for s in sums[0]) > 0  # not a vacuous comparison


def ranking_sums(scores, batch, mask_history):
    from latentcrs_jax.evaluation import ranking

    return ranking.full_ranking_metrics(
        scores, batch["target"], batch["history"], batch["valid"], mask_history=mask_history
    )


@pytest.mark.slow
def test_entropy_and_top_k_switches_run(tmp_path):
    cfg = small_config(max_epochs=1, m_entropy_weight=0.1, prior_top_k=2)
    _, _, fit = _fit(tmp_path, cfg, em.main_plan()[2])
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert "train/M/entropy" in rows[0]
    assert np.isfinite(fit.final_metrics["valid/prior/ndcg@10"])


class _EveryHeadEveryEpoch(em.EMTask):
    epoch_eval_step = None  # the Trainer evaluates every head each epoch


@pytest.mark.parametrize("phase_index", [0, 1])
def test_per_epoch_eval_of_the_trained_head_gives_the_full_records(tmp_path, phase_index):
    # The posterior phase trains q only, the prior phase the prior only: each epoch scores
    # just that head, and the frozen heads' metrics come from the first epoch. The records
    # must equal evaluating every head in every epoch.
    cfg = small_config(max_epochs=4, patience=10)
    phase = em.main_plan()[phase_index]
    splits, item_emb, intents = synthetic_inputs()
    mesh = sharding.make_mesh()
    init = None
    if phase.init_from:
        first = em.EMTask(cfg, em.main_plan()[0], splits, item_emb, intents, None, mesh)
        init = jax.device_get(first.create_state(jax.random.key(1)).params)
    records = []
    for cls, out in ((em.EMTask, "part"), (_EveryHeadEveryEpoch, "full")):
        task, _, _ = _fit(tmp_path / out, cfg, phase, init, (splits, item_emb, intents), cls)
        rows = [json.loads(line) for line in (tmp_path / out / "metrics.jsonl").open()]
        timing = ("seconds", "per_s")
        records.append(
            [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows]
        )
    assert len(records[0]) == 5  # 4 epochs and the final record
    assert records[0] == records[1]
    trained = f"valid/{phase.stop_head}/ndcg@10"
    assert len({r[trained] for r in records[0][:4]}) > 1  # the trained head moved
    state = task.create_state(jax.random.key(0))
    batch = next(iter(task.eval_batches("valid")))
    per_epoch = jax.eval_shape(lambda s, b: em.EMTask.epoch_eval_step(task, s, b), state, batch)
    assert {k.split("/")[0] for k in per_epoch} == {phase.stop_head}


def test_a_phase_that_stops_on_an_untrained_head_is_rejected():
    splits, item_emb, intents = synthetic_inputs()
    phase = em.EMPhase("odd", ("M",), "posterior")
    with pytest.raises(ValueError, match="never train"):
        em.EMTask(small_config(), phase, splits, item_emb, intents, None, sharding.make_mesh())


def test_em_benchmark_times_both_passes_and_the_full_ranking():
    """`benchmark_em` builds one single-pass phase per pass (each stopping on the head its pass
    trains) and reports positive rates; a phase left stopping on an untrained head fails here."""
    from configs import tiny
    from latentcrs_jax import benchmark

    result = benchmark.benchmark_em(
        tiny.get_config(), num_items=50, eval_users=16, repeats=1, steps=2, modes=("corrected",)
    )
    for em_pass in ("E", "M"):
        assert result[f"em/corrected/{em_pass}_step_samples_per_s"] > 0
    assert result["ranking/users"] == 16 and result["ranking/users_per_s_3_heads"] > 0
    assert not any(key.startswith("em/faithful") for key in result)
