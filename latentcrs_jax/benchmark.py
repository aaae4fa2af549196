"""Throughput and memory figures for a config (a benchmark, never a test).

Every figure is measured after a warm-up call (compile time reported separately) as the
median of several timed repeats, on synthetic inputs of the config's sizes (items, K,
hidden, batch, negatives, history, text width), so no workdir is needed:
  pretrain sequences/s   one length-L training input's forward + backward (pretrain/benchmark.py)
  E-step / M-step        EM samples/s, corrected default (cached user states) and faithful
                         mode (backbone with dropout inside the step), in the Trainer's
                         loop: host batch + placement + donated chained step
  full ranking           seconds and users/s of a three-head full-ranking pass over all
                         test users (placement and metric fetch included)
  encoder                sentences/s of the text encoder at its batch settings
  encoder_shapes         (not by default) CPU and wall us per padded token of the encoder's
                         jitted forward alone at several rows x length shapes
  peak RSS               of this process
"""

import dataclasses
import functools
import itertools
import pathlib
import resource
import statistics
import time
from collections.abc import Callable

import jax
import numpy as np

from latentcrs_jax.errors import UserInputError
from latentcrs_jax.evaluation import ranking
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import em, em_data, sharding
from latentcrs_jax.training.pretrain import benchmark as pretrain_bench
from latentcrs_jax.training.pretrain.config import model_config_from, pretrain_config_from


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(compile + first call seconds, median seconds of `repeats` further calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


def _em_inputs(num_items, hidden, text_dim, k, history, negatives, rows, seed=0):
    rng = np.random.default_rng(seed)
    intents = rng.normal(size=(k, hidden)).astype(np.float32)
    intents /= np.linalg.norm(intents, axis=1, keepdims=True)
    item_emb = rng.normal(scale=0.1, size=(num_items + 1, hidden)).astype(np.float32)
    target = rng.integers(1, num_items + 1, rows).astype(np.int32)
    split = em_data.SplitArrays(
        h=rng.normal(size=(rows, hidden)).astype(np.float32),
        x=rng.normal(size=(rows, text_dim)).astype(np.float32),
        history=rng.integers(1, num_items + 1, (rows, history)).astype(np.int32),
        target=target,
        candidates=np.concatenate(
            [target[:, None], rng.integers(1, num_items + 1, (rows, negatives))], 1
        ).astype(np.int32),
        user=np.arange(rows, dtype=np.int32),
    )
    return {"train": split, "valid": split, "test": split}, item_emb, intents


def _train_loop_time(task, step, mesh, steps: int, repeats: int) -> tuple[float, float]:
    """(compile + first step seconds, median seconds per step) of the Trainer's inner loop.

    Each timed step does what `loop.Trainer` does per step: build the host batch with the
    task's generator, place it on the mesh, run the jitted step on the donated, chained state;
    each repeat of `steps` steps ends with one device sync (the Trainer syncs every 50 steps).
    """

    def batches():
        for epoch in itertools.count():
            yield from task.train_batches(epoch)

    def run(state, n):
        for batch, _ in zip(stream, range(n)):
            batch.pop("pass")
            state, metrics = step(state, sharding.place_batch(batch, mesh))
        return state, metrics

    stream = batches()
    state = jax.jit(task.create_state, out_shardings=sharding.replicated(mesh))(
        jax.random.PRNGKey(0)
    )
    state = task.on_epoch_start(state, 0)
    t0 = time.perf_counter()
    state, metrics = run(state, 1)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics = run(state, steps)
        jax.block_until_ready(metrics)
        times.append((time.perf_counter() - t0) / steps)
    return first, statistics.median(times)


def benchmark_em(
    config,
    num_items: int,
    text_dim: int = 384,
    eval_users: int = 6034,
    repeats: int = 5,
    steps: int = 10,
    modes: tuple[str, ...] = ("corrected", "faithful"),
) -> dict:
    """E-step and M-step samples/s (corrected and faithful) and full-ranking users/s.

    Steps are timed in the Trainer's loop (host batch, placement, donated chained state; see
    `_train_loop_time`), one pass at a time, the E pass after its per-epoch refresh. The
    full-ranking figure is `ranking.evaluate` (placement, three heads, metric sums, one fetch)
    over `eval_users` users, in padded eval batches. `modes`: which of corrected / faithful
    to time (the ranking figure comes with corrected).
    """
    base = em.EMConfig.from_config(config.em)
    k, hidden = int(config.pretrain.num_intents), int(config.backbone.hidden)
    history = int(config.data.max_window) - 1
    rows = max(base.batch_size, eval_users)
    splits, item_emb, intents = _em_inputs(
        num_items, hidden, text_dim, k, history, int(config.data.num_negatives), rows
    )
    splits["test"] = em_data.SplitArrays(
        **{
            f.name: getattr(splits["test"], f.name)[:eval_users]
            for f in dataclasses.fields(em_data.SplitArrays)
        }
    )
    backbone_cfg = model_config_from(config.backbone, num_items)
    backbone_params = sasrec.init_params(backbone_cfg, jax.random.PRNGKey(0))
    mesh = sharding.make_mesh()
    repl = sharding.replicated(mesh)
    out = {}
    em_phase = em.main_plan()[2]
    for mode, faithful in (("corrected", False), ("faithful", True)):
        if mode not in modes:
            continue
        cfg = dataclasses.replace(base, faithful_backbone=faithful, faithful_e_target=faithful)
        for em_pass in ("E", "M"):
            stop_head = em.PASS_HEAD[em_pass]
            phase = dataclasses.replace(em_phase, passes=(em_pass,), stop_head=stop_head)
            task = em.EMTask(
                cfg, phase, splits, item_emb, intents, (backbone_cfg, backbone_params), mesh
            )
            step = jax.jit(
                functools.partial(task.train_step, em_pass=em_pass),
                donate_argnums=(0,),
                out_shardings=(repl, repl),
            )
            compile_s, sec = _train_loop_time(task, step, mesh, steps, repeats)
            out[f"em/{mode}/{em_pass}_step_samples_per_s"] = base.batch_size / sec
            out[f"em/{mode}/{em_pass}_step_compile_s"] = compile_s
        if mode == "corrected":
            state = jax.jit(task.create_state, out_shardings=repl)(jax.random.PRNGKey(0))
            eval_step = jax.jit(task.eval_step, out_shardings=repl)

            def full_pass(task=task, eval_step=eval_step, state=state):
                return ranking.evaluate(
                    lambda b: eval_step(state, b),
                    task.eval_batches("test"),
                    place=lambda b: sharding.place_batch(b, mesh),
                )

            compile_s, sec = _median_time(full_pass, max(1, repeats // 2))
            out["ranking/users"] = eval_users
            out["ranking/seconds_all_users"] = sec
            out["ranking/users_per_s_3_heads"] = eval_users / sec
            out["ranking/compile_s"] = compile_s
    return out


def benchmark_texts(path: str | None, num_texts: int = 512) -> list[str]:
    """`num_texts` sentences: those of `path` (an .npz with a `sentences` array, like the
    MiniLM parity fixture, or a UTF-8 file with one text per line) repeated in order, or
    synthetic utterance-like ones when `path` is None."""
    if path is None:
        words = ("tense", "thriller", "from", "the", "nineties", "with", "a", "twist", "ending")
        rng = np.random.default_rng(0)
        return [" ".join(rng.choice(words, size=rng.integers(6, 30))) for _ in range(num_texts)]
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            source = [str(t) for t in data["sentences"]]
    else:
        source = pathlib.Path(path).read_text(encoding="utf-8").splitlines()
    if not source:
        raise UserInputError(f"{path}: no sentences to benchmark the encoder on")
    return [source[i % len(source)] for i in range(num_texts)]


def benchmark_encoder(
    config, texts_path: str | None = None, num_texts: int = 512, repeats: int = 3
) -> dict:
    """Sentences/s of the configured encoder (sentences from `benchmark_texts`)."""
    from latentcrs_jax.text import encode

    settings = encode.TextSettings.from_config(config.text)
    encoder = encode.TextEncoder.from_settings(settings)
    texts = benchmark_texts(texts_path, num_texts)
    result = encode.benchmark_encoder(encoder, texts, repeats=repeats)
    return {
        "encoder/sentences_per_s": result["sentences_per_s"],
        "encoder/batch_size": settings.batch_size,
        "encoder/batch_tokens": settings.batch_tokens,
    }


def benchmark_encoder_shapes(config) -> dict:
    """CPU and wall microseconds per padded token of the encoder's jitted forward alone, at
    the shapes of `encode.SHAPES` (rows x length), to tell the forward's cost from padding."""
    from latentcrs_jax.text import encode

    encoder = encode.TextEncoder.from_settings(encode.TextSettings.from_config(config.text))
    out = {}
    for r in encode.forward_cost(encoder):
        key = f"encoder_shapes/{r['rows']}x{r['length']}"
        out[f"{key}/cpu_us_per_token"] = r["cpu_us_per_token"]
        out[f"{key}/wall_us_per_token"] = r["wall_us_per_token"]
    return out


def benchmark_pretrain(config, num_items: int, full_length: bool = False) -> dict:
    """Pretrain sequences/s with the config's backbone and pretrain settings (synthetic
    ML-1M-like sequences; `full_length`: every input has max_len real items)."""
    result = pretrain_bench.benchmark(
        model_config_from(config.backbone, num_items),
        pretrain_config_from(config.pretrain),
        full_length=full_length,
    )
    return {f"pretrain/{k}": v for k, v in result.items() if isinstance(v, int | float)}


def run(
    config,
    num_items: int,
    parts=("pretrain", "em", "encoder"),
    full_length: bool = False,
    encoder_texts: str | None = None,
) -> dict:
    """All figures for a config; peak RSS and device facts included."""
    out = {
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "num_items": num_items,
    }
    if "pretrain" in parts:
        out.update(benchmark_pretrain(config, num_items, full_length))
    if "em" in parts:
        out.update(benchmark_em(config, num_items))
    if "encoder" in parts:
        out.update(benchmark_encoder(config, encoder_texts))
    if "encoder_shapes" in parts:
        out.update(benchmark_encoder_shapes(config))
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out
