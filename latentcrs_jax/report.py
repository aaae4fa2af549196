"""Report for a finished workdir: training curves, intent map and coherence, multi-turn SR,
sensitivity to K and the KL weight.

Writes PNG figures (matplotlib, Agg backend) and one Markdown page `report.md` that embeds
them into `<workdir>/report/`. The plotting and statistics functions take plain arrays so
they can be used (and tested) without a trained model; `write_report` reads a workdir.
"""

import collections
import dataclasses
import json
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

EM_PHASES = (
    "posterior",
    "prior",
    "em",
    "fusion",
    "no_kl_prior",
    "no_kl_em",
    "no_rec_prior",
    "no_rec_em",
)
_LOSS_KEYS = ("train/loss", "train/E/loss", "train/M/loss")
_NDCG_KEYS = ("valid/prior/ndcg@10", "valid/posterior/ndcg@10", "valid/backbone/ndcg@10")
_DPI = 110


@dataclasses.dataclass(frozen=True)
class IntentStats:
    """Coherence of one intent over the users assigned to it."""

    intent: int
    users: int
    top_attributes: tuple[tuple[str, int], ...]  # (attribute, user count), most common first
    purity: float  # share of its users whose target has the dominant attribute (nan if none)


def read_metrics(path: str | pathlib.Path) -> list[dict]:
    """Reads a metrics.jsonl, dropping the trailing `final/...` record(s)."""
    records = []
    with pathlib.Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if not any(k.startswith("final/") for k in rec):
                    records.append(rec)
    return records


def _series(records: Sequence[dict], key: str) -> tuple[list, list]:
    xs = [r.get("epoch", i) for i, r in enumerate(records) if key in r]
    return xs, [r[key] for r in records if key in r]


def plot_phase_curves(phases: dict[str, list[dict]], out_path: pathlib.Path) -> pathlib.Path:
    """One row per EM phase: training losses (left) and valid NDCG@10 (right) per epoch.

    Args:
      phases: phase name -> metrics records (epoch order, no final record).
      out_path: PNG to write.
    """
    n = max(len(phases), 1)
    fig, axes = plt.subplots(n, 2, figsize=(11, 2.6 * n), squeeze=False)
    for row, (name, records) in enumerate(phases.items()):
        ax_loss, ax_ndcg = axes[row]
        for key in _LOSS_KEYS:
            xs, ys = _series(records, key)
            if xs:
                total = key == "train/loss"  # drawn on top: it equals E or M in one-pass phases
                ax_loss.plot(
                    xs,
                    ys,
                    "k--" if total else "-",
                    marker="" if total else ".",
                    zorder=3 if total else 2,
                    label=key.removeprefix("train/"),
                )
        for key in _NDCG_KEYS:
            xs, ys = _series(records, key)
            if xs:
                style = "--" if "backbone" in key else "-"
                ax_ndcg.plot(xs, ys, style, marker=".", label=key.split("/")[1])
        ax_loss.set_title(f"{name}: training loss")
        ax_ndcg.set_title(f"{name}: valid NDCG@10")
        for ax in (ax_loss, ax_ndcg):
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=_DPI)
    plt.close(fig)
    return out_path


def plot_pretrain_curve(records: list[dict], out_path: pathlib.Path) -> pathlib.Path:
    """Backbone pretraining: training loss and valid NDCG@20 (or @10) per epoch."""
    fig, (ax_loss, ax_ndcg) = plt.subplots(1, 2, figsize=(11, 3.2))
    xs, ys = _series(records, "train/loss")
    ax_loss.plot(xs, ys, marker=".")
    ax_loss.set_title("pretrain: training loss")
    key = "valid/ndcg@20" if any("valid/ndcg@20" in r for r in records) else "valid/ndcg@10"
    xs, ys = _series(records, key)
    ax_ndcg.plot(xs, ys, marker=".", color="tab:green")
    ax_ndcg.set_title(f"pretrain: {key}")
    for ax in (ax_loss, ax_ndcg):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=_DPI)
    plt.close(fig)
    return out_path


def pca_2d(fit: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """Projects arrays onto the top-2 principal axes of `fit` (numpy SVD).

    Args:
      fit: float[N, d] points defining the mean and axes.
      *arrays: float[M, d] arrays to project.

    Returns:
      One float[M, 2] array per input array.
    """
    fit = np.asarray(fit, np.float64)
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:
        axes = np.pad(axes, ((0, 0), (0, 2 - axes.shape[1])))
    return [(np.asarray(a, np.float64) - mean) @ axes for a in arrays]


def assign_intents(states: np.ndarray, intents: np.ndarray) -> np.ndarray:
    """int[S]: for each user state h the intent c with the highest dot product h·c.

    Args:
      states: float[S, d] user states.
      intents: float[K, d] intent vectors.
    """
    return np.argmax(np.asarray(states) @ np.asarray(intents).T, axis=1)


def intent_coherence(
    assignment: np.ndarray, target_attributes: Sequence[Sequence[str]], num_intents: int
) -> list[IntentStats]:
    """Per intent: user count, top-3 attributes of the users' targets, and purity.

    Args:
      assignment: int[S] intent of each user.
      target_attributes: S lists of attributes (genres / categories) of each user's target.
      num_intents: K.
    """
    if len(assignment) != len(target_attributes):
        raise ValueError(f"{len(assignment)} assignments but {len(target_attributes)} targets")
    members = collections.defaultdict(list)
    for user, k in enumerate(np.asarray(assignment)):
        members[int(k)].append(user)
    stats = []
    for k in range(num_intents):
        users = members.get(k, [])
        counts = collections.Counter(a for u in users for a in set(target_attributes[u]))
        top = tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3])  # ties: by name
        if top:
            dominant = top[0][0]
            purity = sum(dominant in target_attributes[u] for u in users) / len(users)
        else:
            purity = float("nan")
        stats.append(IntentStats(k, len(users), top, purity))
    return stats


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def plot_intent_map(
    intents: np.ndarray,
    states: np.ndarray,
    assignment: np.ndarray,
    labels: Sequence[str],
    out_path: pathlib.Path,
    *,
    max_states: int = 2000,
    seed: int = 0,
) -> pathlib.Path:
    """2-D PCA of intents (large, coloured by dominant attribute) over sampled user states.

    Args:
      intents: float[K, d] intent vectors.
      states: float[S, d] user states.
      assignment: int[S] intent of each user state.
      labels: K dominant-attribute labels ("" when an intent has no users).
      out_path: PNG to write.
      max_states: at most this many user states are drawn (sampled without replacement).
      seed: sampling seed.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(len(states))
    if len(idx) > max_states:
        idx = np.sort(rng.choice(idx, max_states, replace=False))
    states, assignment = np.asarray(states)[idx], np.asarray(assignment)[idx]
    # argmax_c h·c does not depend on |h|, so compare directions: L2-normalise both.
    states = _unit(states)
    intents = _unit(intents)
    p_int, p_st = pca_2d(np.concatenate([states, intents]), intents, states)
    names = sorted({lab for lab in labels if lab})
    cmap = plt.get_cmap("tab20")
    colour = {name: cmap(i % 20) for i, name in enumerate(names)}
    grey = (0.6, 0.6, 0.6, 1.0)
    fig, ax = plt.subplots(figsize=(9, 7))
    st_colours = [colour.get(labels[k], grey) for k in assignment]
    ax.scatter(p_st[:, 0], p_st[:, 1], s=9, c=st_colours, alpha=0.45, linewidths=0)
    int_colours = [colour.get(lab, grey) for lab in labels]
    ax.scatter(
        p_int[:, 0], p_int[:, 1], s=90, c=int_colours, marker="*", edgecolors="k", linewidths=0.6
    )
    handles = [
        plt.Line2D([], [], marker="*", ls="", ms=10, mfc=colour[n], mec="k", label=n) for n in names
    ]
    if "" in labels:
        handles.append(
            plt.Line2D([], [], marker="*", ls="", ms=10, mfc=grey, mec="k", label="(no users)")
        )
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title(
        f"Intent map: PCA of {len(intents)} intents (stars) and {len(states)} test user states"
        " (dots, L2-normalised)\ncoloured by the dominant attribute of the targets of each"
        " intent's users (dot colour: its assigned intent)",
        fontsize=10,
    )
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    fig.tight_layout()
    fig.savefig(out_path, dpi=_DPI)
    plt.close(fig)
    return out_path


def plot_purity(stats: Sequence[IntentStats], out_path: pathlib.Path) -> pathlib.Path:
    """Sorted bar chart of intent purity (intents with no users are left out)."""
    used = sorted((s for s in stats if s.users), key=lambda s: -s.purity)
    fig, ax = plt.subplots(figsize=(max(6, 0.16 * len(used) + 2), 3.6))
    ax.bar(range(len(used)), [s.purity for s in used], color="tab:blue")
    ax.set_xticks(range(len(used)), [str(s.intent) for s in used], rotation=90, fontsize=6)
    ax.set_ylim(0, 1)
    ax.set_xlabel("intent id (sorted by purity)")
    ax.set_ylabel("purity")
    ax.set_title(
        f"Intent purity: share of users whose target has the intent's dominant attribute "
        f"({len(used)} intents with users)",
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=_DPI)
    plt.close(fig)
    return out_path


def plot_multi_turn(result: dict, out_path: pathlib.Path) -> pathlib.Path:
    """Success rate after each round per system, from eval/multi_turn.json."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, system in result["systems"].items():
        sr = system["success_rate"]
        ax.plot(range(1, len(sr) + 1), sr, marker="o", label=system.get("label", name))
    ax.set_xlabel("round")
    ax.set_ylabel("success rate (cumulative)")
    rounds = max(len(s["success_rate"]) for s in result["systems"].values())
    ax.set_xticks(range(1, rounds + 1))
    ax.set_title("Multi-turn success rate per round")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=_DPI)
    plt.close(fig)
    return out_path


_SENS_X = {"K": "num_intents", "kl_weight": "kl_weight"}  # series -> its x value's key


def plot_sensitivity(result: dict, out_path: pathlib.Path) -> pathlib.Path:
    """Test HIT@10 and NDCG@10 against K (left) and the KL weight (right), log x axes, the
    frozen backbone dashed, from a sensitivity.json (evaluation/sensitivity.py)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    held = result["defaults"]
    for ax, series, label, other in (
        (axes[0], "K", "K (intents)", f"KL weight {held['kl_weight']:g}"),
        (axes[1], "kl_weight", "KL weight", f"K = {held['num_intents']}"),
    ):
        points = sorted(result[series], key=lambda p: p[_SENS_X[series]])
        xs = [p[_SENS_X[series]] for p in points]
        for metric, colour in (("hit@10", "tab:blue"), ("ndcg@10", "tab:orange")):
            if points:
                ys = [p[metric] for p in points]
                ax.plot(xs, ys, marker="o", color=colour, label=f"LatentCRS {metric.upper()}")
                base = points[0]["backbone"][metric]
                ax.axhline(base, ls="--", color=colour, alpha=0.6, label=f"backbone {metric}")
        if xs and min(xs) > 0:
            ax.set_xscale("log", base=2 if series == "K" else 10)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(label)
        ax.set_title(f"test metrics against {label} ({other})", fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.suptitle(f"Sensitivity, {result['dataset']}, EM seed {result['seed']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=_DPI)
    plt.close(fig)
    return out_path


def sensitivity_table(result: dict) -> str:
    """Markdown table of a sensitivity.json: one row per point, K points first."""
    lines = ["| varied | K | KL weight | HIT@10 | NDCG@10 |", "|---|---|---|---|---|"]
    for series in ("K", "kl_weight"):
        for p in sorted(result[series], key=lambda p: p[_SENS_X[series]]):
            lines.append(
                f"| {series} | {p['num_intents']} | {p['kl_weight']:g} | {p['hit@10']:.4f} "
                f"| {p['ndcg@10']:.4f} |"
            )
    return "\n".join(lines)


def item_attributes(item: dict) -> list[str]:
    """Genres (MovieLens) or categories (Amazon) of an item dict."""
    return list(item.get("genres") or item.get("categories") or [])


def coherence_table(stats: Sequence[IntentStats], top: int = 20) -> str:
    """Markdown table of the `top` intents by user count."""
    lines = ["| intent | users | top attributes (users) | purity |", "|---|---|---|---|"]
    for s in sorted(stats, key=lambda s: (-s.users, s.intent))[:top]:
        attrs = ", ".join(f"{a} ({c})" for a, c in s.top_attributes) or "-"
        purity = "-" if np.isnan(s.purity) else f"{s.purity:.2f}"
        lines.append(f"| {s.intent} | {s.users} | {attrs} | {purity} |")
    return "\n".join(lines)


def _first_seed_dir(workdir: pathlib.Path) -> pathlib.Path | None:
    seeds = sorted(workdir.glob("em/seed*"), key=lambda p: int(p.name[4:] or 0))
    return seeds[0] if seeds else None


def write_report(
    workdir: str | pathlib.Path,
    states: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    items: Sequence[dict] | None = None,
) -> pathlib.Path:
    """Writes `<workdir>/report/` (PNGs + report.md) and returns the path of report.md.

    Sections whose inputs are missing are skipped.

    Args:
      workdir: a finished workdir.
      states: float[S, d] test user states (the intent sections need states, targets, items).
      targets: int[S] test target item ids.
      items: item dicts indexed by item id (with "genres" or "categories").
    """
    workdir = pathlib.Path(workdir)
    out = workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# LatentCRS report: `{workdir.name}`", ""]

    md += ["## Training curves", ""]
    pretrain_metrics = workdir / "pretrain" / "metrics.jsonl"
    if pretrain_metrics.is_file():
        plot_pretrain_curve(read_metrics(pretrain_metrics), out / "pretrain_curve.png")
        md += ["### Backbone pretraining", "", "![pretrain](pretrain_curve.png)", ""]
    seed_dir = _first_seed_dir(workdir)
    if seed_dir is not None:
        phases = {
            s: read_metrics(seed_dir / s / "metrics.jsonl")
            for s in EM_PHASES
            if (seed_dir / s / "metrics.jsonl").is_file()
        }
        if phases:
            plot_phase_curves(phases, out / "em_curves.png")
            md += [f"### EM phases ({seed_dir.name})", "", "![em curves](em_curves.png)", ""]

    intents_path = workdir / "pretrain" / "intents.npy"
    if intents_path.is_file() and states is not None and targets is not None and items:
        intents = np.load(intents_path)
        assignment = assign_intents(states, intents)
        attrs = [item_attributes(items[int(t)]) for t in targets]
        stats = intent_coherence(assignment, attrs, len(intents))
        labels = [s.top_attributes[0][0] if s.top_attributes else "" for s in stats]
        plot_intent_map(intents, states, assignment, labels, out / "intent_map.png")
        plot_purity(stats, out / "intent_purity.png")
        used = [s for s in stats if s.users]
        mean_purity = float(np.mean([s.purity for s in used])) if used else float("nan")
        md += [
            "## Intent map",
            "",
            f"{len(intents)} intents, {len(states)} test users; each user is assigned to the "
            "intent with the highest h·c.",
            "",
            "![intent map](intent_map.png)",
            "",
            "## Intent coherence",
            "",
            f"{len(used)} of {len(intents)} intents have users; mean purity {mean_purity:.3f}.",
            "",
            coherence_table(stats),
            "",
            "![intent purity](intent_purity.png)",
            "",
        ]

    multi_turn = workdir / "eval" / "multi_turn.json"
    if multi_turn.is_file():
        plot_multi_turn(json.loads(multi_turn.read_text()), out / "multi_turn.png")
        md += ["## Multi-turn success rate", "", "![multi-turn](multi_turn.png)", ""]
        if (workdir / "eval" / "multi_turn.md").is_file():
            md += [(workdir / "eval" / "multi_turn.md").read_text().strip(), ""]

    one_turn = workdir / "eval" / "one_turn.md"
    if one_turn.is_file():
        md += ["## One-turn results", "", one_turn.read_text().strip(), ""]

    sensitivity = workdir / "sensitivity" / "sensitivity.json"
    if sensitivity.is_file():  # launch/sensitivity.py: the paper's Figure 3.
        result = json.loads(sensitivity.read_text())
        plot_sensitivity(result, out / "sensitivity.png")
        md += [
            "## Sensitivity to K and the KL weight",
            "",
            f"LatentCRS (prior mixture), test split, EM seed {result['seed']}; each point varies "
            f"one value and holds the other at the config's (K = "
            f"{result['defaults']['num_intents']}, KL weight "
            f"{result['defaults']['kl_weight']:g}).",
            "",
            "![sensitivity](sensitivity.png)",
            "",
            sensitivity_table(result),
            "",
        ]

    dialogues = sorted((workdir / "eval" / "dialogues").glob("*.md"))
    if dialogues:  # launch/evaluate_dialogues.py: human dialogues, zero-shot.
        md += ["## Human dialogues", ""]
        for path in dialogues:
            md += [f"### {path.stem}", "", path.read_text(encoding="utf-8").strip(), ""]

    path = out / "report.md"
    path.write_text("\n".join(md), encoding="utf-8")
    logging.info("report written to %s", path)
    return path


def build(config, workdir: str | pathlib.Path) -> pathlib.Path:
    """Reads the saved test user states (`artifacts.load_user_states`, written by the train
    stage) and the items of a workdir, then `write_report`."""
    from latentcrs_jax import artifacts
    from latentcrs_jax.data import dataset

    workdir = pathlib.Path(workdir)
    states = targets = items = None
    saved = artifacts.load_user_states(workdir, "test")
    if saved is not None and (workdir / "pretrain" / "intents.npy").is_file():
        ds = dataset.load(workdir / "data")
        states, targets, items = saved, np.asarray(ds.splits["test"].target), ds.items
    return write_report(workdir, states, targets, items)
