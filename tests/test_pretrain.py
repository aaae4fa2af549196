"""Tests for latentcrs_jax.training.pretrain: data cut points, negatives, determinism, resume,
1 vs 4 devices, single compilation, and the written artefacts."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

from latentcrs_jax import artifacts
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import sharding
from latentcrs_jax.training.pretrain import config as pretrain_config
from latentcrs_jax.training.pretrain import data as pretrain_data
from latentcrs_jax.training.pretrain import stage as pretrain_stage

N_ITEMS = 30
REPO = pathlib.Path(__file__).resolve().parents[1]


def _sequences(num_users=20, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(5, 14)), replace=False)
        for _ in range(num_users)
    ]


MODEL = sasrec.SASRecConfig(num_items=N_ITEMS, max_len=8, hidden=8, num_layers=1, num_heads=2)


def _cfg(**kw):
    base = dict(
        loss="iclrec", batch_size=8, eval_batch_size=8, max_epochs=3, patience=5,
        num_intents=3, n_views=2, kmeans_redo=1, kmeans_iters=5, ks=(5, 10, 15, 20),
    )  # fmt: skip
    base.update(kw)
    return pretrain_config.PretrainConfig(**base)


def test_cut_points_and_padding():
    seqs = [np.arange(1, 11), np.array([3, 4, 5])]
    d = pretrain_data.build_sequence_data(seqs, 12, max_len=4)
    np.testing.assert_array_equal(d.train_users, [0])  # 3 items: no training sample
    np.testing.assert_array_equal(d.train_input[0], [4, 5, 6, 7])  # S[:-3], last 4
    np.testing.assert_array_equal(d.train_target[0], [5, 6, 7, 8])  # S[1:-2]
    np.testing.assert_array_equal(d.train_full.row(0), [1, 2, 3, 4, 5, 6, 7])  # whole S[:-3]
    assert d.full_width == 7
    v, t = d.eval["valid"], d.eval["test"]
    np.testing.assert_array_equal(v["target"], [9, 4])
    np.testing.assert_array_equal(v["input"][1], [0, 0, 0, 3])  # S[:-2]
    np.testing.assert_array_equal(v["exclude"].row(0), np.arange(1, 9))  # whole prefix, not last 4
    np.testing.assert_array_equal(v["exclude"].row(1), [3])
    np.testing.assert_array_equal(t["target"], [10, 5])
    with pytest.raises(ValueError, match="outside 1..12"):
        pretrain_data.build_sequence_data([np.array([1, 13, 2, 3])], 12, 4)


def test_negatives_avoid_the_whole_user_sequence():
    seqs = [np.arange(1, 9), np.array([9, 10])]
    d = pretrain_data.build_sequence_data(seqs, 10, max_len=4)
    rng = np.random.default_rng(0)
    negs = pretrain_data.sample_negatives(rng, np.array([0, 1]), (2, 500), 10, d.user_item_keys)
    assert set(negs[0].tolist()) == {9, 10}  # user 0 consumed 1..8
    assert set(negs[1].tolist()) == set(range(1, 9))
    with pytest.raises(ValueError, match="did not converge"):
        pretrain_data.sample_negatives(
            rng, np.array([0]), (1, 3), 8, d.user_item_keys, max_rounds=5
        )


@pytest.mark.parametrize("loss", [pytest.param("iclrec", marks=pytest.mark.slow), "ce"])
def test_same_seed_gives_bit_identical_first_step(loss):
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    task = pretrain_stage.make_task(data, MODEL, _cfg(loss=loss), mesh)
    step = jax.jit(task.train_step)
    metrics = []
    for _ in range(2):  # everything rebuilt from the seed: state, K-means, batch, step RNG
        state = task.create_state(jax.random.PRNGKey(1))
        state = task.on_epoch_start(state, 0)
        batch = sharding.place_batch(next(task.train_batches(0)), mesh)
        metrics.append(jax.device_get(step(state, batch)[1]))
    chex.assert_trees_all_equal(metrics[0], metrics[1])
    assert np.isfinite(metrics[0]["loss"])
    if loss == "iclrec":
        assert metrics[0]["instance_loss"] > 0 and metrics[0]["intent_loss"] > 0


@pytest.mark.parametrize("buckets", [0, 3])
def test_item_chunked_eval_step_equals_the_full_one(buckets):
    # Scoring 7 items at a time with a running top-k (eval_item_chunk) must give the full
    # [B, N+1] ranking's sums on every batch, history masked or not.
    data = pretrain_data.build_sequence_data(_sequences(num_users=19), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    for mask in (True, False):
        sums = []
        for chunk in (0, 7):
            cfg = _cfg(
                loss="ce", eval_item_chunk=chunk, length_buckets=buckets, mask_history_in_eval=mask
            )
            task = pretrain_stage.make_task(data, MODEL, cfg, mesh)
            state = task.create_state(jax.random.PRNGKey(2))
            step = jax.jit(task.eval_step)
            sums.append(
                [
                    jax.device_get(step(state, sharding.place_batch(b, mesh)))
                    for b in task.eval_batches("test")
                ]
            )
        chex.assert_trees_all_close(sums[0], sums[1], rtol=1e-6)
        assert sum(float(s["hit@20"][0]) for s in sums[0]) > 0  # not a vacuous comparison


def _records(path):
    keep = []
    for line in pathlib.Path(path).read_text().splitlines():
        rec = json.loads(line)
        keep.append({k: v for k, v in rec.items() if "seconds" not in k and "per_s" not in k})
    return keep


@pytest.mark.slow
def test_run_resume_and_artefacts(tmp_path):
    seqs = _sequences()
    straight = pretrain_stage.train(seqs, N_ITEMS, MODEL, _cfg(max_epochs=3), tmp_path / "a")
    # "Kill" after 2 epochs (a shorter run), then restart with the full budget: it resumes.
    pretrain_stage.train(seqs, N_ITEMS, MODEL, _cfg(max_epochs=2), tmp_path / "b")
    resumed = pretrain_stage.train(seqs, N_ITEMS, MODEL, _cfg(max_epochs=3), tmp_path / "b")
    assert _records(tmp_path / "a" / "metrics.jsonl") == _records(tmp_path / "b" / "metrics.jsonl")
    for k, v in straight.items():
        if "seconds" not in k:
            assert resumed[k] == v, k
    # The resumed process ran one epoch; the total counts all three.
    assert resumed["train_seconds_this_process"] < resumed["train_seconds_total"]
    assert resumed["train_seconds_to_best_epoch"] <= resumed["train_seconds_total"]
    for name in ("intents.npy", "centroids.npy", "assignments.npy"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "a" / name), np.load(tmp_path / "b" / name)
        )
    intents = np.load(tmp_path / "a" / "intents.npy")
    assert intents.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(intents, axis=1), 1.0, rtol=1e-5)
    assign = np.load(tmp_path / "a" / "assignments.npy")
    assert assign.shape == (20,) and assign.min() >= 0 and assign.max() < 3
    model_cfg, params, loaded = artifacts.load_backbone(tmp_path / "a")
    assert model_cfg == MODEL
    np.testing.assert_array_equal(loaded, intents)
    assert params["params"]["item_embed"]["embedding"].shape == (N_ITEMS + 1, 8)


def test_ce_run_compiles_once(tmp_path):
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    from latentcrs_jax.training import loop

    task = pretrain_stage.make_task(data, MODEL, _cfg(loss="ce", ce_chunk=16), sharding.make_mesh())
    trainer = loop.Trainer(loop.TrainerConfig(max_epochs=2, patience=5), tmp_path)
    trainer.fit(task)  # 20 users, batch 8: the last batch of each epoch is padded
    assert trainer.train_step_traces == 1


def test_ce_microbatches_give_the_whole_batch_loss_and_gradient():
    # Without dropout the microbatched scan must equal one pass over the whole batch.
    model_cfg = dataclasses.replace(MODEL, hidden_dropout=0.0, attn_dropout=0.0)
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    batch = next(pretrain_stage.make_task(data, model_cfg, _cfg(loss="ce"), mesh).train_batches(0))
    assert 0 < batch["target"][-1].astype(bool).sum() < 8  # unequal target counts per row
    results = []
    for micro in (0, 2, 4):
        task = pretrain_stage.make_task(data, model_cfg, _cfg(loss="ce", microbatch=micro), mesh)
        state = task.create_state(jax.random.PRNGKey(0))
        results.append(task._ce_value_and_grad(state.params, batch, jax.random.PRNGKey(1)))
    for loss, grads in results[1:]:
        np.testing.assert_allclose(loss, results[0][0], rtol=1e-6)
        chex.assert_trees_all_close(grads, results[0][1], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="must divide batch_size"):
        _cfg(loss="ce", microbatch=3)


@pytest.mark.slow
def test_iclrec_microbatches_give_the_whole_batch_step():
    # Without dropout, encoding (sequence, views) m rows at a time under remat must give the
    # whole-batch losses and update.
    model_cfg = dataclasses.replace(MODEL, hidden_dropout=0.0, attn_dropout=0.0)
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    results = []
    for micro in (0, 2, 4):
        task = pretrain_stage.make_task(data, model_cfg, _cfg(microbatch=micro), mesh)
        state = task.on_epoch_start(task.create_state(jax.random.PRNGKey(0)), 0)
        new_state, metrics = jax.jit(task.train_step)(state, next(task.train_batches(0)))
        results.append((metrics, new_state.params))
    assert float(results[0][0]["instance_loss"]) > 0 and float(results[0][0]["intent_loss"]) > 0
    for metrics, params in results[1:]:
        chex.assert_trees_all_close(metrics, results[0][0], rtol=1e-5)
        chex.assert_trees_all_close(params, results[0][1], rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_bce_loss_is_the_iclrec_step_without_its_contrastive_terms():
    # Same dropout draws for the sequence, so the update must equal ICLRec's with both
    # contrastive weights at 0; with them on, the step differs.
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    results = {}
    for name, kw in {
        "bce": dict(loss="bce"),
        "zero": dict(cf_weight=0.0, intent_cf_weight=0.0),
        "iclrec": {},
    }.items():
        task = pretrain_stage.make_task(data, MODEL, _cfg(microbatch=4, **kw), mesh)
        state = task.on_epoch_start(task.create_state(jax.random.PRNGKey(0)), 0)
        batch = next(task.train_batches(0))
        assert batch["negative"].shape == batch["target"].shape
        assert ("full" in batch) == (name != "bce")  # the views' source, ICLRec only
        new_state, metrics = jax.jit(task.train_step)(state, batch)
        results[name] = (float(metrics["rec_loss"]), new_state.params)
    np.testing.assert_allclose(results["bce"][0], results["zero"][0], rtol=1e-6)
    chex.assert_trees_all_close(results["bce"][1], results["zero"][1], rtol=1e-5, atol=1e-7)
    assert results["bce"][0] == pytest.approx(results["iclrec"][0], rel=1e-6)  # same forward
    w_bce = results["bce"][1]["params"]["item_embed"]["embedding"]
    w_icl = results["iclrec"][1]["params"]["item_embed"]["embedding"]
    assert not np.allclose(w_bce, w_icl, atol=1e-7)
    # Like CE, the BCE loss reads real positions only, so length buckets may trim padding.
    data = pretrain_data.build_sequence_data(_sequences(num_users=40), N_ITEMS, MODEL.max_len)
    task = pretrain_stage.make_task(data, MODEL, _cfg(loss="bce", length_buckets=2), mesh)
    batch = min(task.train_batches(0), key=lambda b: b["input"].shape[1])
    assert batch["input"].shape[1] < MODEL.max_len
    assert batch["negative"].shape == batch["target"].shape
    _, metrics = jax.jit(task.train_step)(task.create_state(jax.random.PRNGKey(0)), batch)
    assert np.isfinite(float(metrics["loss"]))


def test_length_bucketed_evaluation_gives_the_same_metrics():
    from latentcrs_jax.evaluation import ranking

    data = pretrain_data.build_sequence_data(_sequences(num_users=40), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    params = None
    results = []
    for buckets in (0, 4):
        task = pretrain_stage.make_task(data, MODEL, _cfg(loss="ce", length_buckets=buckets), mesh)
        params = params or task.create_state(jax.random.PRNGKey(0))
        batches = list(task.eval_batches("test"))
        widths = {b["input"].shape[1] for b in batches}
        assert len(batches) == 5 and (len(widths) > 1 if buckets else widths == {MODEL.max_len})
        step = jax.jit(task.eval_step)
        results.append(ranking.evaluate(lambda b, s=step, p=params: s(p, b), batches))
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        np.testing.assert_allclose(results[1][k], results[0][k], atol=1e-7, err_msg=k)


def test_step_decay_of_the_learning_rate():
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    mesh = sharding.make_mesh()
    constant = pretrain_stage.make_task(data, MODEL, _cfg(loss="ce", lr=0.01), mesh)
    assert constant.learning_rate() == 0.01
    cfg = _cfg(loss="ce", lr=0.01, lr_decay_epochs=(2, 3), lr_decay_factor=0.5)
    task = pretrain_stage.make_task(data, MODEL, cfg, mesh)
    sched, n = task.learning_rate(), task.num_train_batches()  # 20 users, batch 8: 3 steps
    assert n == 3
    got = [float(sched(s)) for s in (0, 2 * n - 1, 2 * n, 3 * n - 1, 3 * n, 100)]
    np.testing.assert_allclose(got, [0.01, 0.01, 0.005, 0.005, 0.0025, 0.0025])


def test_bad_config_errors():
    with pytest.raises(ValueError, match="must be one of"):
        pretrain_config.PretrainConfig(loss="bpr")
    with pytest.raises(ValueError, match="length_buckets does not apply"):
        _cfg(length_buckets=4)
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    with pytest.raises(ValueError, match="lower pretrain.num_intents"):
        pretrain_stage.make_task(data, MODEL, _cfg(num_intents=50), sharding.make_mesh())


_MULTI_DEVICE = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from jax.sharding import Mesh
    sys.path.insert(0, sys.argv[1])
    from tests.test_pretrain import MODEL, N_ITEMS, _cfg, _sequences
    from latentcrs_jax.training import sharding
    from latentcrs_jax.training.pretrain import data as pretrain_data
    from latentcrs_jax.training.pretrain import stage as pretrain_stage
    assert jax.device_count() == 4, jax.devices()
    data = pretrain_data.build_sequence_data(_sequences(24), N_ITEMS, MODEL.max_len)
    out = {}
    for n in (1, 4):
        mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
        task = pretrain_stage.make_task(data, MODEL, _cfg(), mesh)
        repl = sharding.replicated(mesh)
        state = jax.jit(task.create_state, out_shardings=repl)(jax.random.PRNGKey(1))
        step = jax.jit(task.train_step, donate_argnums=(0,), out_shardings=(repl, repl))
        losses = []
        for epoch in range(2):
            state = task.on_epoch_start(state, epoch)
            for batch in task.train_batches(epoch):
                state, m = step(state, sharding.place_batch(batch, mesh))
                losses.append(float(m["loss"]))
        out[n] = losses
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_one_vs_four_devices_same_loss_trajectory():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _MULTI_DEVICE, str(REPO)],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one, four = np.array(out["1"]), np.array(out["4"])
    assert len(one) == 6
    np.testing.assert_allclose(four, one, atol=1e-5, rtol=0)


def test_length_buckets_cover_every_user_once_with_enough_width():
    data = pretrain_data.build_sequence_data(_sequences(), N_ITEMS, MODEL.max_len)
    task = pretrain_stage.make_task(
        data, MODEL, _cfg(loss="ce", length_buckets=4), sharding.make_mesh()
    )
    seen = []
    for batch in task.train_batches(0):
        width = batch["input"].shape[1]
        assert width in (2, 4, 6, 8)
        rows = batch["input"][batch["valid"]]
        seen.extend(tuple(r[r > 0]) for r in rows)
        assert np.all((batch["target"][batch["valid"]] > 0).sum(1) <= width)
    want = [tuple(r[r > 0]) for r in data.train_input]
    assert sorted(seen) == sorted(want)


@pytest.mark.slow
def test_benchmark_reports_pretrain_throughput():
    from latentcrs_jax.training.pretrain import benchmark as benchmark_pretrain

    target = np.array([[0, 3, 4, 5], [0, 0, 7, 0]], np.int32)
    np.testing.assert_array_equal(
        benchmark_pretrain._last_target_only(target), [[0, 0, 0, 5], [0, 0, 0, 0]]
    )

    model_cfg = sasrec.SASRecConfig(num_items=60, max_len=40, hidden=8)
    cfg = pretrain_config.PretrainConfig(
        loss="ce", batch_size=8, eval_batch_size=8, microbatch=4, ce_chunk=16, length_buckets=4
    )
    for full_length in (False, True):
        result = benchmark_pretrain.benchmark(
            model_cfg, cfg, num_users=40, mean_len=20, train_steps=2, eval_batches=2,
            full_length=full_length,
        )  # fmt: skip
        assert result["train_seq_per_s"] > 0 and result["rank_users_per_s"] > 0
        assert result["train_seq_per_s_last_target"] > 0  # RecBole's objective, ce only
        assert result["peak_rss_gb"] > 0 and result["batch_size"] == 8
        assert (result["target_fraction"] == 1.0) == full_length
        assert 1 <= result["eval_compilations"] <= 3  # mean 20 items, L 40: widths 40, longest
