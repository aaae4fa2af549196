"""Filters, per-user time order, the iterated k-core and contiguous ids (docs/method.md 1.2-1.3).

Order of operations (each a config field of the `data` section):
  1. ratings >= `min_rating` (applied by the reader while streaming),
  2. exact duplicate rows dropped (`dedup_exact`),
  3. items without a metadata row dropped (`require_metadata`),
  4. per-user stable sort by timestamp (`sort_by_time`; ties keep file order),
  5. users with >= `min_user_items` items; with `item_core` > 0, the iterated k-core: items
     need >= `item_core` interactions, users >= `min_user_items`, repeated until nothing changes
     (or for `kcore_max_passes` passes, the authors' 10),
  6. ids: users in increasing raw id when every raw id is an integer (ML), else in order of
     first appearance in the file (Amazon, as the authors' csv); items 1..N in order of first
     appearance over those user sequences; 0 is PAD.
"""

import collections
import dataclasses
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.data import items as items_lib
from latentcrs_jax.data.errors import DataError
from latentcrs_jax.data.readers import RawData


@dataclasses.dataclass
class Sequences:
    """Time-ordered per-user item sequences over contiguous ids.

    Attributes:
      user_raw_ids: raw id of user u (u = 0..U-1).
      item_raw_ids: raw id of item i (i = 0..N; index 0 is PAD, "").
      sequences: U arrays int32[n_u] of item ids in time order.
      items: N+1 item records (index 0 is the PAD placeholder).
      filter_log: (step, users, items, interactions) after each filtering step.
    """

    user_raw_ids: list[str]
    item_raw_ids: list[str]
    sequences: list[np.ndarray]
    items: list[dict[str, Any]]
    filter_log: list[tuple[str, int, int, int]]


def _counts(seqs: dict[str, list[str]]) -> tuple[int, int, int]:
    items = {i for s in seqs.values() for i in s}
    return len(seqs), len(items), sum(len(s) for s in seqs.values())


def _kcore(seqs: dict[str, list[str]], data_config, log) -> dict[str, list[str]]:
    """Iterated k-core on items (>= item_core) and users (>= min_user_items)."""
    max_passes = data_config.kcore_max_passes or 10**9
    for pass_no in range(1, max_passes + 1):
        counts = collections.Counter(i for s in seqs.values() for i in s)
        new = {}
        for user, items in seqs.items():
            kept = [i for i in items if counts[i] >= data_config.item_core]
            if len(kept) >= data_config.min_user_items:
                new[user] = kept
        changed = _counts(new) != _counts(seqs)
        seqs = new
        log.append((f"k-core pass {pass_no}", *_counts(seqs)))
        if not changed:
            break
    else:
        logging.info("k-core stopped after %d passes (kcore_max_passes)", max_passes)
    return seqs


def build_sequences(raw: RawData, data_config) -> Sequences:
    """Applies the filters and builds contiguous-id, time-ordered sequences."""
    n = len(raw)
    keep = np.ones(n, bool)
    log = [(f"ratings >= {data_config.min_rating:g}", *_raw_counts(raw, keep))]
    if data_config.dedup_exact:
        seen = set()
        for k in range(n):
            key = (raw.users[k], raw.items[k], int(raw.timestamps[k]))
            if key in seen:
                keep[k] = False
            seen.add(key)
        log.append(("exact duplicates dropped", *_raw_counts(raw, keep)))
    missing = [k for k in range(n) if keep[k] and raw.items[k] not in raw.item_meta]
    if missing and raw.strict_items and not data_config.require_metadata:
        k = missing[0]
        raise DataError(
            f"unknown item id {raw.items[k]!r} (not in {raw.items_path})",
            raw.interactions_path,
            int(raw.lines[k]),
        )
    if data_config.require_metadata:
        keep[missing] = False
        log.append(("items need metadata", *_raw_counts(raw, keep)))

    order = np.flatnonzero(keep)
    if data_config.sort_by_time:
        order = order[np.argsort(raw.timestamps[order], kind="stable")]
    seqs: dict[str, list[str]] = {}
    for k in order:
        seqs.setdefault(raw.users[k], []).append(raw.items[k])
    if raw.numeric_user_ids:
        user_order = sorted(seqs, key=int)
    else:
        first = {}
        for k in np.flatnonzero(keep):
            first.setdefault(raw.users[k], k)
        user_order = sorted(seqs, key=first.__getitem__)
    seqs = {u: seqs[u] for u in user_order}

    if data_config.item_core > 0:
        seqs = _kcore(seqs, data_config, log)
    else:
        seqs = {u: s for u, s in seqs.items() if len(s) >= data_config.min_user_items}
        log.append((f"users >= {data_config.min_user_items} items", *_counts(seqs)))
    if data_config.get("user_limit", 0):
        seqs = dict(list(seqs.items())[: data_config.user_limit])
        log.append((f"first {data_config.user_limit} users", *_counts(seqs)))
    if not seqs:
        raise DataError(
            f"no users left after filtering (min_rating={data_config.min_rating:g}, "
            f"min_user_items={data_config.min_user_items}, item_core={data_config.item_core})",
            raw.interactions_path,
        )

    item_ids: dict[str, int] = {}
    sequences = []
    for items in seqs.values():
        sequences.append(
            np.asarray([item_ids.setdefault(i, len(item_ids) + 1) for i in items], np.int32)
        )
    item_raw_ids = [""] + list(item_ids)
    records = [items_lib.pad_item()]
    for raw_id in item_raw_ids[1:]:
        records.append(raw.item_meta.get(raw_id) or items_lib.make_item(raw_id, raw_id))
    return Sequences(list(seqs), item_raw_ids, sequences, records, log)


def _raw_counts(raw: RawData, keep: np.ndarray) -> tuple[int, int, int]:
    idx = np.flatnonzero(keep)
    return (
        len({raw.users[k] for k in idx}),
        len({raw.items[k] for k in idx}),
        len(idx),
    )
