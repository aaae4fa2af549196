"""Host-sharded feeding: with P processes, each feeding `sharding.process_rows` of every global
batch, an epoch feeds every training sample exactly once across the processes."""

import collections

import numpy as np
import pytest

from latentcrs_jax.models import sasrec
from latentcrs_jax.training import em_data, sharding
from latentcrs_jax.training.pretrain import config as pretrain_config
from latentcrs_jax.training.pretrain import data as pretrain_data
from latentcrs_jax.training.pretrain import stage as pretrain_stage

USERS, BATCH = 21, 8  # 21 samples: the last batch of 8 has 3 padding rows


def _fed(batches, key, num_processes):
    """Counter of the (key) values of the valid rows every process feeds."""
    fed = collections.Counter()
    for batch in batches:
        for p in range(num_processes):
            rows = sharding.process_rows(len(batch[key]), p, num_processes)
            fed.update(batch[key][rows][batch["valid"][rows]].tolist())
    return fed


@pytest.mark.parametrize("num_processes", [1, 2, 4, 8])
@pytest.mark.parametrize("buckets", [0, 2])
def test_pretrain_epoch_feeds_every_sample_once(num_processes, buckets):
    # User u's last training input item is 100 + u, so a fed row names its sample.
    rng = np.random.default_rng(0)
    seqs = [
        np.concatenate([rng.choice(np.arange(1, 50), int(rng.integers(2, 9)), replace=False),
                        [100 + u], rng.choice(np.arange(50, 100), 3, replace=False)])
        for u in range(USERS)
    ]  # fmt: skip
    n_items = 100 + USERS
    data = pretrain_data.build_sequence_data(seqs, n_items, max_len=6)
    model = sasrec.SASRecConfig(num_items=n_items, max_len=6, hidden=8, num_layers=1, num_heads=2)
    cfg = pretrain_config.PretrainConfig(
        loss="bce", batch_size=BATCH, eval_batch_size=BATCH, length_buckets=buckets
    )
    task = pretrain_stage.make_task(data, model, cfg, sharding.make_mesh())
    for epoch in (0, 1):
        batches = [{**b, "last": b["input"][:, -1]} for b in task.train_batches(epoch)]
        assert all(len(b["last"]) == BATCH for b in batches)
        fed = _fed(batches, "last", num_processes)
        assert fed == collections.Counter(range(100, 100 + USERS))


@pytest.mark.parametrize("num_processes", [1, 2, 4])
def test_em_pass_feeds_every_row_once_plus_the_wrap_around(num_processes):
    # EM fills its last batch with the first rows of the same permutation (no padding).
    num_rows = 37
    order = em_data.epoch_order(num_rows, BATCH, seed=3, epoch=1, phase=0)
    batches = [
        {"row": order[s : s + BATCH], "valid": np.ones(BATCH, bool)}
        for s in range(0, len(order), BATCH)
    ]
    fed = _fed(batches, "row", num_processes)
    wrapped = collections.Counter(order[num_rows:].tolist())
    assert fed == collections.Counter({r: 1 + wrapped[r] for r in range(num_rows)})
    assert sum(wrapped.values()) == -num_rows % BATCH


def test_process_rows_rejects_uneven_shares():
    assert sharding.process_rows(8, 3, 4) == slice(6, 8)
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        sharding.process_rows(8, 0, 3)
