"""Scaling benchmark: how each stage's time and memory grow with users and items.

For every (users, items) size, `launch/benchmark_scale.py` runs each stage below in its own
process (so each stage's peak RSS is its own) on a synthetic dataset
(`latentcrs_jax/data/synthetic.py`) and its prepared workdir:
  synthesize  write the generic CSV files                                   (measured whole)
  prepare     read, filter, split, augment, save (`data.prepare.prepare`)   (measured whole)
  pretrain    one backbone epoch = train batches x the median step of `steps` real steps on
              the prepared sequences (`training/pretrain/benchmark.py`), and the backbone's
              full ranking of every test user = users / measured users/s
  em          one EM epoch of the main phase (one E and one M pass over every training
              sample) = samples x measured seconds per sample of each pass, and the three
              heads' full ranking of every test user (`latentcrs_jax/benchmark.py`, timed over
              all of them)
  encode      the text encoder on 512 of the items' texts: seconds per 1,000 items (its cost
              per item does not depend on the sizes: run for the first size only)
Step-timed figures are extrapolations from `steps` steps (compile excluded, reported apart);
the stage's wall time and peak RSS cover everything its process did. `fit_exponents` fits
log t = a + b_users log U + b_items log N by least squares over the sizes.
"""

import math
import pathlib
import time

import numpy as np

STAGES = ("synthesize", "prepare", "pretrain", "em", "encode")
# The figure of each stage that the table, the fit and the plot use.
MAIN_FIGURES = {
    "synthesize": "wall_s",
    "prepare": "wall_s",
    "pretrain": "epoch_s",
    "pretrain_rank": "rank_all_users_s",
    "em": "epoch_s",
    "em_rank": "rank_all_users_s",
    "encode": "s_per_1000_items",
}


def _data_config(config, data_dir):
    data = config.data
    with data.unlocked():
        data.reader = "generic"
        data.data_dir = str(data_dir)
        data.name = "synthetic"
        data.user_limit = 0
    return data


def _load(workdir):
    from latentcrs_jax.data import dataset

    return dataset.load(pathlib.Path(workdir) / "data", verify=False)


def stage_synthesize(config, data_dir, workdir, users, items, steps, mean_length=20.0):
    from latentcrs_jax.data import synthetic

    cfg = synthetic.SynthConfig(users, items, mean_length=mean_length)
    counts = synthetic.write(cfg, data_dir)
    return {"interactions": counts["interactions"]}


def stage_prepare(config, data_dir, workdir, users, items, steps):
    from latentcrs_jax.data import prepare

    ds = prepare.prepare(_data_config(config, data_dir), workdir)
    keep = ("users", "items", "interactions", "train_samples", "test_samples")
    return {k: ds.stats[k] for k in keep}


def stage_pretrain(config, data_dir, workdir, users, items, steps):
    from latentcrs_jax.training.pretrain import benchmark as pretrain_bench
    from latentcrs_jax.training.pretrain.config import model_config_from, pretrain_config_from

    ds = _load(workdir)
    seqs = ds.sequences()
    cfg = pretrain_config_from(config.pretrain)
    r = pretrain_bench.benchmark(
        model_config_from(config.backbone, ds.num_items),
        cfg,
        sequences=seqs,
        train_steps=steps,
        eval_batches=steps,
    )
    train_users = sum(len(s) >= 4 for s in seqs)  # one training sample per user (S[:-3])
    test_users = sum(len(s) >= 2 for s in seqs)
    batches = math.ceil(train_users / cfg.batch_size)
    return {
        "epoch_s": batches * r["train_step_s"],
        "train_batches": batches,
        "train_step_s": r["train_step_s"],
        "compile_train_s": r["compile_train_s"],
        "rank_all_users_s": test_users / r["rank_users_per_s"],
        "rank_users": test_users,
        "compile_eval_s": r["compile_eval_s"],
    }


def stage_em(config, data_dir, workdir, users, items, steps):
    from latentcrs_jax import benchmark

    ds = _load(workdir)
    test_users = int(ds.stats["test_samples"])
    r = benchmark.benchmark_em(
        config, ds.num_items, eval_users=test_users, repeats=1, steps=steps, modes=("corrected",)
    )
    per_sample = {p: 1.0 / r[f"em/corrected/{p}_step_samples_per_s"] for p in ("E", "M")}
    samples = int(ds.stats["train_samples"])
    return {
        "epoch_s": samples * (per_sample["E"] + per_sample["M"]),
        "train_samples": samples,
        "E_samples_per_s": 1.0 / per_sample["E"],
        "M_samples_per_s": 1.0 / per_sample["M"],
        "rank_all_users_s": r["ranking/seconds_all_users"],
        "rank_users": test_users,
    }


def stage_encode(config, data_dir, workdir, users, items, steps):
    from latentcrs_jax import benchmark

    ds = _load(workdir)
    texts = [f"{it['title']}. {it.get('description', '')}" for it in ds.items[1:513]]
    path = pathlib.Path(workdir) / "encode_texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    r = benchmark.benchmark_encoder(config, str(path), num_texts=len(texts), repeats=1)
    return {
        "s_per_1000_items": 1000.0 / r["encoder/sentences_per_s"],
        "items_per_s": r["encoder/sentences_per_s"],
    }


def run_stage(
    stage: str, config, data_dir, workdir, users: int, items: int, steps: int, **kwargs
) -> dict:
    """Runs one stage in this process: its figures plus `wall_s`."""
    fn = globals()[f"stage_{stage}"]
    t0 = time.perf_counter()
    out = fn(config, data_dir, workdir, users, items, steps, **kwargs)
    out["wall_s"] = time.perf_counter() - t0
    return out


def catalogue_items(row: dict) -> int:
    """Items in the prepared catalogue (prepare drops items nobody interacted with, so a
    Zipf catalogue keeps fewer than the generator's `items`), else the nominal count."""
    return int(row["stages"].get("prepare", {}).get("items") or row["items"])


def figures(rows: list[dict], *, catalogue: bool = True) -> dict[str, list[tuple[int, int, float]]]:
    """Figure name -> [(users, items, seconds)] over the sizes that have it; items are the
    prepared catalogue's (what the stages see) unless `catalogue=False` (the nominal size)."""
    out = {}
    for row in rows:
        items = catalogue_items(row) if catalogue else row["items"]
        for name, key in MAIN_FIGURES.items():
            stage = row["stages"].get(name.split("_rank")[0], {})
            if isinstance(stage.get(key), int | float):
                out.setdefault(name, []).append((row["users"], items, float(stage[key])))
    return out


def fit_exponents(points: list[tuple[int, int, float]]) -> dict[str, float]:
    """Least-squares b_users, b_items of log t = a + b_users log U + b_items log N; an axis
    whose value never changes over `points` is left out."""
    pts = np.array(points, float)
    cols, names = [np.ones(len(pts))], []
    for i, name in ((0, "users"), (1, "items")):
        if len(np.unique(pts[:, i])) > 1:
            cols.append(np.log(pts[:, i]))
            names.append(name)
    if len(pts) < len(cols) or not names:
        return {}
    coef = np.linalg.lstsq(np.stack(cols, 1), np.log(pts[:, 2]), rcond=None)[0]
    return {f"exponent_{n}": float(c) for n, c in zip(names, coef[1:])}


def plot(rows: list[dict], path: str | pathlib.Path) -> None:
    """Log-log time against users (items fixed at the smallest) and against the catalogue's
    items (users fixed at the smallest), one line per stage figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nominal, actual = figures(rows, catalogue=False), figures(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, axis, other in ((axes[0], 0, 1), (axes[1], 1, 0)):
        for color, (name, pts) in enumerate(sorted(nominal.items())):
            # Lines group the sizes by the nominal grid; x is the catalogue's item count.
            fixed = min(p[other] for p in pts)
            line = sorted(
                (a[axis], a[2]) for p, a in zip(pts, actual[name], strict=True) if p[other] == fixed
            )
            if len(line) > 1:
                ax.loglog(*zip(*line), marker="o", label=name, color=f"C{color}")
        ax.set_xlabel(("users" if axis == 0 else "items in the catalogue") + " (log)")
        ax.set_ylabel("seconds (log)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title("time vs users (items fixed)")
    axes[1].set_title("time vs items (users fixed)")
    for ax in axes:  # one colour per figure in both panels
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(stage: dict, key: str) -> str:
    if stage.get("status", "ok") != "ok":
        return stage["status"]
    value = stage.get(key)
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.3g} s ({stage['peak_rss_gib']:.2f} GiB)"


def markdown(rows: list[dict], exponents: dict[str, dict[str, float]]) -> str:
    """The table (each cell: the stage's main figure and its process's peak RSS) and the
    fitted exponents, as Markdown."""
    names = list(MAIN_FIGURES)
    lines = [
        "| users | items (catalogue) | interactions | " + " | ".join(names) + " |",
        "|---" * (3 + len(names)) + "|",
    ]
    for row in rows:
        stages = row["stages"]
        inter = stages.get("prepare", {}).get("interactions", "-")
        cells = [_cell(stages.get(n.split("_rank")[0], {}), MAIN_FIGURES[n]) for n in names]
        items = f"{row['items']} ({catalogue_items(row)})"
        lines.append(f"| {row['users']} | {items} | {inter} | " + " | ".join(cells) + " |")
    lines += ["", "| figure | exponent in users | exponent in catalogue items |", "|---|---|---|"]
    for name in names:
        fit = exponents.get(name, {})
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{fit[k]:.2f}" if k in fit else "-" for k in ("exponent_users", "exponent_items")
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
