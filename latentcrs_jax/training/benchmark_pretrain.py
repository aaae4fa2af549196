"""Throughput of the backbone: training sequences/s and full-ranking users/s (not a test).

`benchmark(...)` builds an ML-1M-sized synthetic problem (or takes real sequences), compiles
the real train and eval steps of `pretrain.PretrainTask`, and times steady-state steps. One
"sequence" is one length-L training input's forward + backward (all positions); for the iclrec
loss that includes its augmented views, as in the authors' per-batch timing.

  python -m launch.benchmark --config=configs/ml1m.py:ce --parts=pretrain (configs -> here)
"""

import dataclasses
import resource
import time

import jax
import numpy as np

from latentcrs_jax.models import sasrec
from latentcrs_jax.training import pretrain, sharding


def _synthetic_sequences(
    num_users: int, num_items: int, mean_len: int, min_len: int = 20, seed: int = 0
):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.geometric(1.0 / mean_len, size=num_users), min_len, 2000)
    lengths = np.minimum(lengths, num_items)
    return [rng.choice(np.arange(1, num_items + 1), size=n, replace=False) for n in lengths]


def benchmark(
    model_cfg: sasrec.SASRecConfig,
    cfg: pretrain.PretrainConfig,
    *,
    num_users: int = 6040,
    mean_len: int = 165,
    full_length: bool = False,
    train_steps: int = 5,
    eval_batches: int = 5,
    sequences=None,
) -> dict:
    """Times the train step and the full-ranking eval step.

    Training batches always have the full width L (`length_buckets` is turned off): one
    "sequence" is one length-L input, whatever its number of real items.

    Args:
      model_cfg: the backbone (ML-1M: N 3,533, L 200, hidden 64, 2 blocks).
      cfg: training settings (batch, loss, views, K, microbatch, CE chunk, ...).
      num_users: synthetic users.
      mean_len: mean synthetic sequence length (ML-1M: ~165).
      full_length: every training input has L real items (no padding anywhere, targets at
        all L positions) instead of ML-1M-like lengths (about half the positions padding).
      train_steps: timed train steps (after one compile step).
      eval_batches: timed eval batches (after one compile batch).
      sequences: optional real sequences (item ids within 1..model_cfg.num_items).

    Returns:
      dict with train_seq_per_s, rank_users_per_s, kmeans_s, compile times, peak_rss_gb.
    """
    num_items, max_len = model_cfg.num_items, model_cfg.max_len
    cfg = dataclasses.replace(cfg, length_buckets=0)
    min_len = max_len + 3 if full_length else 20  # S[:-3] is the training input
    seqs = sequences or _synthetic_sequences(num_users, num_items, mean_len, min_len)
    mesh = sharding.make_mesh()
    data = pretrain.build_sequence_data(seqs, num_items, max_len, cfg.augment_window)
    task = pretrain.PretrainTask(data, model_cfg, cfg, mesh)
    repl = sharding.replicated(mesh)
    state = jax.jit(task.create_state, out_shardings=repl)(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    kmeans_s = float("nan")
    if cfg.loss == "iclrec":
        state = task.on_epoch_start(state, 0)
        kmeans_s = time.perf_counter() - t0
    step = jax.jit(task.train_step, donate_argnums=(0,), out_shardings=(repl, repl))
    batches = task.train_batches(0)
    placed = [
        sharding.place_batch(next(batches), mesh)
        for _ in range(min(train_steps + 1, task.num_train_batches()))
    ]
    t0 = time.perf_counter()
    state, m = step(state, placed[0])
    jax.block_until_ready(m)
    compile_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in placed[1:]:
        state, m = step(state, b)
    jax.block_until_ready(m)
    train_s = (time.perf_counter() - t0) / max(len(placed) - 1, 1)

    ev = jax.jit(task.eval_step)
    eb = [
        sharding.place_batch(b, mesh)
        for _, b in zip(range(eval_batches + 1), task.eval_batches("test"))
    ]
    t0 = time.perf_counter()
    jax.block_until_ready(ev(state, eb[0]))
    compile_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = [ev(state, b) for b in eb[1:]]
    jax.block_until_ready(out)
    eval_s = (time.perf_counter() - t0) / max(len(eb) - 1, 1)
    live = float(np.mean([np.mean(b["target"][b["valid"]] > 0) for b in placed]))
    return {
        "loss": cfg.loss,
        "target_fraction": live,
        "devices": jax.device_count(),
        "batch_size": cfg.batch_size,
        "max_len": max_len,
        "num_items": num_items,
        "train_step_s": train_s,
        "train_seq_per_s": cfg.batch_size / train_s,
        "rank_users_per_s": cfg.eval_batch_size / eval_s,
        "kmeans_s": kmeans_s,
        "compile_train_s": compile_train,
        "compile_eval_s": compile_eval,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
