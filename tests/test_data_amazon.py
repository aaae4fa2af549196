"""Tests of the Amazon Reviews 2023 reader, the iterated k-core and the metadata rule.

The fixture (../shared/fixtures/amazon2023) has file order != time order, `asin` variants of a
`parent_asin`, an exact duplicate review, items without metadata, an empty description list
and non-ASCII titles. With the default rules (ratings >= 4, 5-core) nothing survives in so
small a sample, which also exercises the empty-result error.
"""

import collections
import json

import numpy as np
import pytest
from conftest import shared_path

from configs import videogames
from latentcrs_jax.data import prepare, preprocess, readers
from latentcrs_jax.data.errors import DataError

pytestmark = pytest.mark.needs_shared


def _config(**overrides):
    cfg = videogames.get_config().data
    cfg.data_dir = str(shared_path("fixtures", "amazon2023"))
    cfg.min_rating = 0.0
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def _reviews():
    path = shared_path("fixtures", "amazon2023", "Video_Games.jsonl")
    return [json.loads(line) for line in path.open()]


def test_default_rules_leave_nothing_and_say_so():
    cfg = _config(min_rating=4.0)
    with pytest.raises(DataError, match=r"Video_Games.jsonl: no users left after filtering"):
        prepare.build(cfg)


def test_parent_asin_merges_variants_and_needs_metadata(tmp_path):
    ds = prepare.prepare(_config(), tmp_path)
    reviews = _reviews()
    meta_ids = {
        json.loads(line)["parent_asin"]
        for line in shared_path("fixtures", "amazon2023", "meta_Video_Games.jsonl").open()
    }
    assert set(ds.item_raw_ids[1:]) <= meta_ids
    # Variant asins (B1...) never appear as items: they are folded into their parent.
    assert not any(i.startswith("B1") for i in ds.item_raw_ids[1:])
    # Every kept interaction of a user is in time order.
    times = collections.defaultdict(dict)
    for r in reviews:
        times[r["user_id"]][r["parent_asin"]] = r["timestamp"]
    for u, raw_user in enumerate(ds.user_raw_ids):
        ts = [times[raw_user][ds.item_raw_ids[i]] for i in ds.sequence(u)]
        assert ts == sorted(ts)


def test_kcore_converges(tmp_path):
    cfg = _config(amazon_item_key="asin")
    ds = prepare.prepare(cfg, tmp_path)
    counts = collections.Counter(ds.seq_items.tolist())
    assert min(counts.values()) >= 5
    assert min(len(ds.sequence(u)) for u in range(ds.num_users)) >= 5
    passes = [row for row in ds.stats["filter_log"] if row[0].startswith("k-core")]
    assert len(passes) > 2  # this variant needs several passes to converge


def test_faithful_pass_limit_stops_before_convergence():
    raw = readers.read(_config(amazon_item_key="asin"))
    one = preprocess.build_sequences(raw, _config(amazon_item_key="asin", kcore_max_passes=1))
    full = preprocess.build_sequences(raw, _config(amazon_item_key="asin"))
    assert len(one.sequences) > len(full.sequences)
    counts = collections.Counter(np.concatenate(one.sequences).tolist())
    assert min(counts.values()) < 5  # not yet a 5-core


def test_exact_duplicate_review_dropped():
    raw = readers.read(_config())
    keys = list(zip(raw.users, raw.items, raw.timestamps.tolist()))
    assert len(keys) != len(set(keys))  # the fixture has one
    seqs = preprocess.build_sequences(raw, _config(item_core=0))
    assert seqs.filter_log[1][3] == len(set(keys))


def test_item_records(tmp_path):
    raw = readers.read(_config())
    records = raw.item_meta
    accented = [r for r in records.values() if "Ñandú" in r["title"]]
    assert accented and accented[0]["title"].startswith("Café Ñandú")
    empty = [r for r in records.values() if r["title"] == "Neon Rally 11"]
    assert empty[0]["description"] == ""
    some = next(iter(records.values()))
    assert some["categories"][0] != "Video Games"  # the top level is dropped
    assert any(f.startswith("Genre:") for f in some["features"])
    assert some["text"].startswith(some["title"])


def test_without_metadata_rule_items_keep_their_id(tmp_path):
    cfg = _config(require_metadata=False, item_core=0, amazon_item_key="asin")
    ds = prepare.prepare(cfg, tmp_path)
    bare = [it for it in ds.items[1:] if it["title"] == it["raw_id"]]
    assert bare and ds.stats["items_without_metadata"] == len(bare)
