"""One-turn evaluation: every head and baseline in one table, mean and spread over seeds.

Rows (all full ranking over every item, PAD never ranked, history masked unless
`config.em.mask_history` is False, HIT/NDCG at 5/10/15/20 on the test split):
  LatentCRS            the prior mixture S(u,x,y) after the three EM phases;
  posterior q(m|u)     the posterior head of the same run (behaviour only);
  backbone SASRec      h_u . e_y of the frozen pretrained backbone;
  popularity           training-interaction counts;
  text-only retrieval  cosine(utterance embedding, item-text embedding);
  joint fusion (no EM) the prior's architecture trained with the rec loss alone;
  late fusion          z-scored backbone + text-only (+ log popularity) scores with weights
                       fitted on the validation split (evaluation/late_fusion.py; not in the
                       paper: the bar a fused model has to beat);
  no KL / no rec loss  ablations of the EM run;
  LatentCRS^V          a validator re-ranks the prior's top N (`one_turn_validated.py`: the
                       keyless stand-in per seed; the LLM validator, first seed, when set).
Trained rows come from each EM phase's `final_metrics.json` (the best-valid state); the others
are computed here, 256 samples at a time, and with `em.eval_item_chunk` > 0 that many items at
a time (a running top-k; never the [256, N+1] scores), as the EM evaluation.
Output: `<workdir>/eval/one_turn.{json,md}`.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from latentcrs_jax import fileio
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.evaluation import chunked, late_fusion, one_turn_validated, ranking
from latentcrs_jax.text import stage as encode_stage

METRICS = tuple(f"{m}@{k}" for m in ("hit", "ndcg") for k in ranking.DEFAULT_KS)

# Row label -> (plan, phase directory, head) of trained rows.
TRAINED_ROWS = {
    "LatentCRS (prior mixture)": ("latentcrs", "em", "prior"),
    "posterior q(m|u)": ("latentcrs", "em", "posterior"),
    "backbone SASRec": ("latentcrs", "em", "backbone"),
    "joint fusion (no EM)": ("fusion", "fusion", "prior"),
    "ablation: no KL": ("no_kl", "no_kl_em", "prior"),
    "ablation: no aux rec loss": ("no_rec", "no_rec_em", "prior"),
}


LATE_FUSION_ROW = "late fusion (valid-fitted)"


def popularity_scores(ds: dataset_lib.ProcessedDataset) -> np.ndarray:
    """Interaction counts of each item over the training part S[:-2] of every user: [N+1]."""
    counts = np.zeros(ds.num_items + 1, np.float32)
    for u in range(ds.num_users):
        np.add.at(counts, ds.sequence(u)[:-2], 1.0)
    return counts


def _rank(
    score_fn,
    num_ids: int,
    arrays: dict[str, np.ndarray],
    mask_history: bool,
    chunk: int,
    batch_size: int = 256,
):
    """Metrics of `score_fn(batch, ids)` -> float32[B, C] scores of ids int32[C] (None: all
    `num_ids` = N+1 ids); `chunk` > 0 scores that many items at a time under a running top-k
    (`ranking.chunked_top_k`)."""

    @jax.jit
    def step(batch):
        if not chunk:
            scores = score_fn(batch, None)
            return ranking.full_ranking_metrics(
                scores, batch["target"], batch["history"], batch["valid"], mask_history=mask_history
            )
        top_scores, top_ids = ranking.chunked_top_k(
            lambda ids: score_fn(batch, ids),
            num_ids,
            batch["target"].shape[0],
            batch["history"],
            chunk_size=chunk,
            mask_history=mask_history,
        )
        return ranking.metrics_from_top_k(top_ids, top_scores, batch["target"], batch["valid"])

    return ranking.evaluate(step, ranking.padded_batches(arrays, batch_size))


def baseline_metrics(
    workdir: str | pathlib.Path, split: str, mask_history: bool, chunk: int = 0
) -> dict:
    """Popularity and text-only retrieval on one split: {row: {metric: value}}; `chunk` > 0
    ranks that many items at a time (`em.eval_item_chunk`)."""
    ds = dataset_lib.load(prepare_lib.data_dir(workdir))
    s = ds.splits[split]
    pop = jnp.asarray(popularity_scores(ds))

    def pop_scores(b, ids):
        column = chunked.take(pop, ids)
        return jnp.broadcast_to(column, (b["target"].shape[0], column.shape[0]))

    arrays = {"target": s.target, "history": s.history}
    rows = {"popularity": _rank(pop_scores, pop.shape[0], arrays, mask_history, chunk)}
    try:
        items = jnp.asarray(encode_stage.load(workdir, "items"))
    except FileNotFoundError:
        return rows  # precomputed utterance embeddings without item texts
    x = encode_stage.load(workdir, split)
    if x.shape[1] == items.shape[1]:
        text_scores = lambda b, ids: b["x"] @ chunked.take(items, ids).T  # noqa: E731 (cosine)
        rows["text-only retrieval"] = _rank(
            text_scores, items.shape[0], arrays | {"x": x}, mask_history, chunk
        )
    return rows


def collect(workdir: str | pathlib.Path, seeds, plans, split: str = "test") -> dict:
    """{row: {metric: [value per seed]}} from the trained phases' final metrics."""
    workdir = pathlib.Path(workdir)
    table: dict[str, dict[str, list[float]]] = {}
    for label, (plan, stage, head) in TRAINED_ROWS.items():
        if plan not in plans:
            continue
        for seed in seeds:
            path = workdir / "em" / f"seed{seed}" / stage / "final_metrics.json"
            final = json.loads(path.read_text())
            row = table.setdefault(label, {})
            for m in METRICS:
                row.setdefault(m, []).append(final[f"{split}/{head}/{m}"])
    return table


def build_table(
    workdir, seeds, plans, mask_history: bool, split: str = "test", extra_rows=None, chunk=0
) -> dict:
    """{row: {metric: {"mean", "std", "values"}}}, trained rows and baselines together.

    `extra_rows` ({row: {metric: value}}) are further single-valued rows (e.g. late fusion);
    `chunk` > 0 ranks the baselines that many items at a time.
    """
    raw = collect(workdir, seeds, plans, split)
    baselines = baseline_metrics(workdir, split, mask_history, chunk) | dict(extra_rows or {})
    for label, metrics in baselines.items():
        raw[label] = {m: [metrics[m]] for m in METRICS}
    return {
        label: {
            m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
            for m, v in row.items()
        }
        for label, row in raw.items()
    }


def to_markdown(table: dict, metrics=("hit@10", "ndcg@10", "hit@20", "ndcg@20")) -> str:
    """A Markdown table, mean ± std over seeds."""
    lines = ["| model | " + " | ".join(m.upper() for m in metrics) + " |"]
    lines.append("|---|" + "---|" * len(metrics))
    for label, row in table.items():
        cells = [
            f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}"
            if len(row[m]["values"]) > 1
            else f"{row[m]['mean']:.4f}"
            for m in metrics
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(config, workdir: str | pathlib.Path) -> str:
    """Writes `<workdir>/eval/one_turn.{json,md}` and returns the Markdown table."""
    workdir = pathlib.Path(workdir)
    extra, note = {}, ""
    try:
        weights = late_fusion.load_or_fit(config, workdir)
        extra[LATE_FUSION_ROW] = late_fusion.metrics(config, workdir, "test")
        note = f"\n\nLate fusion weights (fitted on valid NDCG@10): {late_fusion.describe(weights)}"
    except FileNotFoundError as e:  # Precomputed utterance embeddings without item texts.
        logging.info("one-turn: no late-fusion row (%s)", e)
    table = build_table(
        workdir,
        tuple(config.em_seeds),
        tuple(config.em_plans),
        bool(config.em.mask_history),
        extra_rows=extra,
        chunk=int(config.em.eval_item_chunk),
    )
    for label, row in one_turn_validated.rows(config, workdir).items():
        table[label] = {
            m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v}
            for m, v in row.items()
        }
    md = to_markdown(table) + note
    fileio.write_json(workdir / "eval" / "one_turn.json", table)
    header = f"One-turn test results ({len(config.em_seeds)} seed(s), full ranking)\n\n"
    fileio.write_text(workdir / "eval" / "one_turn.md", header + md + "\n")
    return header + md
