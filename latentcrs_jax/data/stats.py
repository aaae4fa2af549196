"""Dataset statistics and the table `launch/prepare.py` prints."""

from typing import Any

import numpy as np

from latentcrs_jax.data import items as items_lib


def compute_stats(
    sequences: list[np.ndarray],
    items: list[dict[str, Any]],
    split_sizes: dict[str, int],
    train_raw: int,
    filter_log: list[tuple[str, int, int, int]],
    items_without_metadata: int,
) -> dict[str, Any]:
    """Returns a JSON-serialisable statistics dict."""
    lengths = np.asarray([len(s) for s in sequences])
    users, n_items, inter = len(sequences), len(items) - 1, int(lengths.sum())
    qs = (0, 25, 50, 75, 90, 100)
    return {
        "users": users,
        "items": n_items,
        "interactions": inter,
        "density": inter / (users * n_items),
        "seq_len_mean": float(lengths.mean()),
        "seq_len_quantiles": {f"p{q}": float(np.percentile(lengths, q)) for q in qs},
        "train_samples": split_sizes["train"],
        "train_raw_samples": train_raw,
        "train_augmented_samples": split_sizes["train"] - train_raw,
        "valid_samples": split_sizes["valid"],
        "test_samples": split_sizes["test"],
        "items_without_metadata": items_without_metadata,
        "items_title_only": sum(not items_lib.has_text_beyond_title(it) for it in items[1:]),
        "filter_log": [list(row) for row in filter_log],
    }


def format_table(stats: dict[str, Any], name: str = "") -> str:
    """Renders the statistics as an aligned plain-text table."""
    q = stats["seq_len_quantiles"]
    rows = [
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("density", f"{100 * stats['density']:.2f}%"),
        ("items per user: mean", f"{stats['seq_len_mean']:.1f}"),
        (
            "items per user: min/p25/p50/p75/p90/max",
            "/".join(f"{q[k]:g}" for k in ("p0", "p25", "p50", "p75", "p90", "p100")),
        ),
        (
            "train samples (raw + augmented)",
            f"{stats['train_samples']:,} ({stats['train_raw_samples']:,} + "
            f"{stats['train_augmented_samples']:,})",
        ),
        ("valid samples", f"{stats['valid_samples']:,}"),
        ("test samples", f"{stats['test_samples']:,}"),
        ("items without metadata", f"{stats['items_without_metadata']:,}"),
        ("items with no text beyond the title", f"{stats['items_title_only']:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"dataset {name}".rstrip(), "-" * (width + 20)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append("filtering steps (users / items / interactions):")
    lines += [
        f"  {step:<{width - 2}}  {u:,} / {i:,} / {e:,}" for step, u, i, e in stats["filter_log"]
    ]
    return "\n".join(lines)
