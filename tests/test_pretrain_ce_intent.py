"""The intent-aligned backbone (loss="ce_intent"): SASRec-CE plus ICLRec's intent term.

Its loss against a numpy reference, the intent term's gradient reaching the encoder, the step
with weight 0 equal to SASRec-CE's, the `:aligned` variant through the pretrain stage on the
tiny config, and the config errors a user can cause.
"""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import ml1m, ml_latest_small, tiny
from latentcrs_jax import preflight
from latentcrs_jax.data import prepare
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.losses import sequential
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import sharding
from latentcrs_jax.training.pretrain import config as pretrain_config
from latentcrs_jax.training.pretrain import data as pretrain_data
from latentcrs_jax.training.pretrain import stage as pretrain_stage

N_ITEMS = 30
MODEL = sasrec.SASRecConfig(num_items=N_ITEMS, max_len=8, hidden=8, num_layers=1, num_heads=2)


def _np_ce(out, table, target):
    """Mean softmax CE over positions with a target; the PAD column (0) left out."""
    logits = out @ table.T  # [B, L, N+1]
    logits = logits[..., 1:]
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    live = target > 0
    tgt = np.take_along_axis(logits, np.maximum(target - 1, 0)[..., None], -1)[..., 0]
    return float(((lse - tgt) * live).sum() / live.sum())


def _np_nce(z1, z2, valid):
    """ICLRec NCELoss (temperature 1): 2B rows, positive = the other view's same row; the
    self-similarities and padding rows left out of every softmax."""
    b = len(z1)
    rows = []
    for a, other, i in [(z1, z2, i) for i in range(b)] + [(z2, z1, i) for i in range(b)]:
        if not valid[i]:
            continue
        cands = [(a[i] @ other[j], j == i) for j in range(b) if valid[j]]
        cands += [(a[i] @ a[j], False) for j in range(b) if valid[j] and j != i]
        logits = np.array([c[0] for c in cands])
        pos = logits[[c[1] for c in cands].index(True)]
        rows.append(np.log(np.exp(logits).sum()) - pos)
    return float(np.mean(rows))


def test_loss_is_ce_plus_weighted_intent_contrast_over_pairs():
    rng = np.random.default_rng(0)
    b, length, d, n = 4, 3, 5, 6
    out = rng.normal(size=(b, length, d)).astype(np.float32)
    table = rng.normal(size=(n + 1, d)).astype(np.float32)
    target = np.array([[0, 2, 5], [1, 3, 6], [0, 0, 4], [0, 0, 0]], np.int32)  # row 3: padding
    valid = np.array([True, True, True, False])
    views = rng.normal(size=(4, b, d)).astype(np.float32)  # two pairs
    cents = rng.normal(size=(b, d)).astype(np.float32)
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    ce = _np_ce(out, table, target)
    intent = sum(
        0.5 * (_np_nce(views[2 * p], cents, valid) + _np_nce(views[2 * p + 1], cents, valid))
        for p in range(2)
    )
    for chunk in (0, 4):
        loss, got_ce, got_intent = sequential.ce_with_intent(
            jnp.asarray(out), jnp.asarray(views), jnp.asarray(table), jnp.asarray(target),
            jnp.asarray(cents), 0.3, 1.0, jnp.asarray(valid), chunk,
        )  # fmt: skip
        np.testing.assert_allclose(float(got_ce), ce, rtol=1e-5)
        np.testing.assert_allclose(float(got_intent), intent, rtol=1e-5)
        np.testing.assert_allclose(float(loss), ce + 0.3 * intent, rtol=1e-5)


def _task(**kw):
    rng = np.random.default_rng(0)
    seqs = [
        rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(5, 14)), replace=False)
        for _ in range(20)
    ]
    cfg = pretrain_config.PretrainConfig(
        **{
            **dict(loss="ce_intent", batch_size=8, eval_batch_size=8, num_intents=3, n_views=3,
                   kmeans_redo=1, kmeans_iters=5, microbatch=4),
            **kw,
        }
    )  # fmt: skip
    data = pretrain_data.build_sequence_data(seqs, N_ITEMS, MODEL.max_len)
    return pretrain_stage.make_task(data, MODEL, cfg, sharding.make_mesh())


def test_intent_term_gradient_reaches_the_encoder():
    task = _task(intent_cf_weight=0.3)
    state = task.on_epoch_start(task.create_state(jax.random.PRNGKey(0)), 0)
    assert float(jnp.abs(state.extras["centroids"]).sum()) > 0  # this epoch's K-means
    batch = jax.tree.map(jnp.asarray, next(task.train_batches(0)))
    seqs, keys = task.sequences_and_views(state, batch)
    assert seqs.shape == (7, 8, MODEL.max_len)  # the sequence and C(3, 2) = 3 pairs of views
    cents = state.extras["centroids"]

    def parts(params):
        aux = task.loss(params, batch, seqs, keys, cents)[1]
        return aux["rec_loss"], aux["intent_loss"]

    @jax.jit
    def gradients(params):
        _, vjp = jax.vjp(parts, params)
        one, zero = jnp.ones(()), jnp.zeros(())
        total = jax.grad(lambda p: task.loss(p, batch, seqs, keys, cents)[0])(params)
        return vjp((one, zero))[0], vjp((zero, one))[0], total

    g_ce, g_intent, g_total = gradients(state.params)
    # The step's gradient is CE's plus the weight times the intent term's.
    chex.assert_trees_all_close(
        g_total, jax.tree.map(lambda a, b: a + 0.3 * b, g_ce, g_intent), rtol=1e-4, atol=1e-7
    )
    encoder = {k: v for k, v in g_intent["params"].items() if k != "item_embed"}
    assert "pos_embed" in encoder and len(encoder) > 2  # embeddings' LayerNorm and the blocks
    for name, g in encoder.items():
        assert float(optax.tree.norm(g)) > 1e-6, name


def test_weight_zero_is_the_sasrec_ce_step():
    # The sequence draws CE's dropout keys and microbatches, so without the intent term the
    # update must be SASRec-CE's (block-causal attention there, plain causal here: the same
    # outputs at real positions, the only ones CE reads).
    results = {}
    for name, kw in {"ce": dict(loss="ce"), "zero": dict(intent_cf_weight=0.0)}.items():
        task = _task(**kw)
        state = task.on_epoch_start(task.create_state(jax.random.PRNGKey(0)), 0)
        new_state, metrics = jax.jit(task.train_step)(state, next(task.train_batches(0)))
        results[name] = (float(metrics["rec_loss"]), new_state.params)
    np.testing.assert_allclose(results["zero"][0], results["ce"][0], rtol=1e-5)
    chex.assert_trees_all_close(results["zero"][1], results["ce"][1], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_aligned_variant_trains_through_the_pretrain_stage(tmp_path):
    config = tiny.get_config("aligned")
    config.pretrain.max_epochs = 2
    prepare.run(config, tmp_path)
    plain = pretrain_stage._fingerprint(tiny.get_config(), tmp_path)
    assert pretrain_stage._fingerprint(config, tmp_path) != plain
    summary = pretrain_stage.run(config, tmp_path)
    assert summary.startswith("backbone (ce_intent,")
    out = pretrain_stage.stage_dir(tmp_path)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "train/loss" in r]  # the epochs (not the final record)
    assert len(records) == 2
    for rec in records:
        assert rec["train/intent_loss"] > 0 and rec["train/rec_loss"] > 0
        assert rec["train/loss"] == pytest.approx(
            rec["train/rec_loss"] + 0.1 * rec["train/intent_loss"], rel=1e-4
        )
    intents = np.load(out / "intents.npy")
    assert intents.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(intents, axis=1), 1.0, rtol=1e-5)
    (out / "metrics.jsonl").unlink()  # a finished stage is skipped, not trained again
    assert pretrain_stage.run(config, tmp_path) == summary
    assert not (out / "metrics.jsonl").exists()


def test_variants_change_only_the_loss_and_the_buckets():
    for module, plain_arg, arg in ((ml_latest_small, None, "aligned"), (ml1m, "ce", "ce,aligned")):
        plain, aligned = module.get_config(plain_arg), module.get_config(arg)
        changed = {k for k in plain.pretrain if plain.pretrain[k] != aligned.pretrain[k]}
        assert aligned.pretrain.loss == "ce_intent"
        assert changed <= {"loss", "length_buckets"} and "loss" in changed
        assert plain.em.to_dict() == aligned.em.to_dict()
        assert plain.backbone.to_dict() == aligned.backbone.to_dict()
    assert ml1m.get_config("aligned").to_dict() == ml1m.get_config("ce,aligned").to_dict()
    with pytest.raises(ValueError, match="unknown variant"):
        ml_latest_small.get_config("alinged")


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("length_buckets", 4, r"length_buckets does not apply to loss='ce_intent'"),
        ("n_views", 1, r"n_views must be >= 2 for the ce_intent loss"),
        ("intent_cf_weight", -0.1, r"intent_cf_weight=-0.1 must be >= 0"),
        ("loss", "ce_intnet", r"pretrain.loss must be one of"),
    ],
)
def test_bad_values_are_clear_config_errors(field, value, message):
    config = tiny.get_config("aligned")
    config.pretrain[field] = value
    with pytest.raises(UserInputError, match=message):
        preflight.check_sections(config)
