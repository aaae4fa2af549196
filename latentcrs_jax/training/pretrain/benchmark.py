"""Throughput of the backbone: training sequences/s and full-ranking users/s (not a test).

`benchmark(...)` builds an ML-1M-sized synthetic problem (or takes real sequences), compiles
the real train and eval steps of the loss's task (`stage.make_task`), and times steady-state
steps. One
"sequence" is one length-L training input's forward + backward (all positions); for the iclrec
loss that includes its augmented views, as in the authors' per-batch timing. For the ce loss it
is timed twice: with our objective (a target at every position) and with RecBole's (a target
at the last position only).

  python -m launch.benchmark --config=configs/ml1m.py:ce --parts=pretrain (configs -> here)
"""

import dataclasses
import resource
import time

import jax
import numpy as np

from latentcrs_jax.models import sasrec
from latentcrs_jax.training import sharding
from latentcrs_jax.training.pretrain.config import PretrainConfig
from latentcrs_jax.training.pretrain.data import build_sequence_data
from latentcrs_jax.training.pretrain.stage import make_task


def _synthetic_sequences(
    num_users: int, num_items: int, mean_len: int, min_len: int = 20, seed: int = 0
):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.geometric(1.0 / mean_len, size=num_users), min_len, 2000)
    lengths = np.minimum(lengths, num_items)
    return [rng.choice(np.arange(1, num_items + 1), size=n, replace=False) for n in lengths]


def _last_target_only(target: np.ndarray) -> np.ndarray:
    """int32[B, L] targets -> the same with every column but the last zeroed."""
    out = np.zeros_like(target)
    out[:, -1] = target[:, -1]
    return out


def benchmark(
    model_cfg: sasrec.SASRecConfig,
    cfg: PretrainConfig,
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
      eval_batches: timed eval batches (after compiling each of their shapes).
      sequences: optional real sequences (item ids within 1..model_cfg.num_items).

    Returns:
      dict with train_seq_per_s, rank_users_per_s, kmeans_s, compile times (compile_eval_s
      covers eval_compilations: one per `exclude` width among the eval batches), peak_rss_gb;
      for the ce loss also train_seq_per_s_last_target: the same steps with a target at the
      last position only, the per-sequence work of RecBole's SASRec-CE (its training samples
      are prefixes with one target each; the forward still covers all L positions).
    """
    num_items, max_len = model_cfg.num_items, model_cfg.max_len
    cfg = dataclasses.replace(cfg, length_buckets=0)
    min_len = max_len + 3 if full_length else 20  # S[:-3] is the training input
    seqs = sequences or _synthetic_sequences(num_users, num_items, mean_len, min_len)
    mesh = sharding.make_mesh()
    data = build_sequence_data(seqs, num_items, max_len, cfg.augment_window)
    task = make_task(data, model_cfg, cfg, mesh)
    repl = sharding.replicated(mesh)
    state = jax.jit(task.create_state, out_shardings=repl)(jax.random.PRNGKey(0))
    t0 = time.perf_counter()
    kmeans_s = float("nan")
    if task.clusters_each_epoch:
        state = task.on_epoch_start(state, 0)
        kmeans_s = time.perf_counter() - t0
    step = jax.jit(task.train_step, donate_argnums=(0,), out_shardings=(repl, repl))
    batches = task.train_batches(0)
    host = [next(batches) for _ in range(min(train_steps + 1, task.num_train_batches()))]
    placed = [sharding.place_batch(b, mesh) for b in host]
    t0 = time.perf_counter()
    state, m = step(state, placed[0])
    jax.block_until_ready(m)
    compile_train = time.perf_counter() - t0

    def time_steps(state, timed):
        t0 = time.perf_counter()
        for b in timed:
            state, m = step(state, b)
        jax.block_until_ready(m)
        return state, (time.perf_counter() - t0) / max(len(timed), 1)

    state, train_s = time_steps(state, placed[1:])
    last_target_s = float("nan")
    if cfg.loss == "ce":
        # RecBole's SASRec-CE objective: the same forward + backward over all L positions,
        # the softmax at the last position only (one target per training sequence).
        last = [
            sharding.place_batch({**b, "target": _last_target_only(b["target"])}, mesh)
            for b in host[1:]
        ]
        state, last_target_s = time_steps(state, last)

    ev = jax.jit(task.eval_step)
    eb = [
        sharding.place_batch(b, mesh)
        for _, b in zip(range(eval_batches + 1), task.eval_batches("test"))
    ]
    t0 = time.perf_counter()
    shapes = set()
    for b in eb:  # One compilation per `exclude` width (task.exclude_width) before timing.
        shape = tuple(sorted((k, v.shape) for k, v in b.items()))
        if shape not in shapes:
            shapes.add(shape)
            jax.block_until_ready(ev(state, b))
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
        "train_seq_per_s_last_target": cfg.batch_size / last_target_s,
        "rank_users_per_s": cfg.eval_batch_size / eval_s,
        "kmeans_s": kmeans_s,
        "compile_train_s": compile_train,
        "compile_eval_s": compile_eval,
        "eval_compilations": len(shapes),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
