"""Tests of the generic format (interactions.csv + items.csv) for custom data."""

import pytest
from data_helpers import data_config

from latentcrs_jax.data import prepare
from latentcrs_jax.data.errors import DataError


def _write(root, with_ts=True):
    rows = ["user_id,item_id,rating,timestamp" if with_ts else "user_id,item_id"]
    for u in ("alice", "bob", "carol"):
        for k, item in enumerate(["i9", "i3", "i5", "i1", "i7", "i2"]):
            ts = 100 - k if u == "alice" else k
            rows.append(f"{u},{item},5,{ts}" if with_ts else f"{u},{item}")
    for user, first, n in (("dave", 0, 8), ("erin", 100, 12)):
        for k in range(first, first + n):
            rows.append(f"{user},j{k},5,{k}" if with_ts else f"{user},j{k}")
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    items = ["item_id,title,text,genres,year", 'i9,"Nine, the item",A long text.,Jazz|Rock,1999']
    items += [f"i{k},Item {k},,," for k in (1, 2, 3, 5, 7)]
    (root / "items.csv").write_text("\n".join(items) + "\n")


def test_generic_reader(tmp_path):
    _write(tmp_path)
    ds = prepare.prepare(data_config(tmp_path, reader="generic"), tmp_path / "w")
    # Users in order of first appearance (ids are not integers); alice sorted by time.
    assert ds.user_raw_ids == ["alice", "bob", "carol", "dave", "erin"]
    assert [ds.item_raw_ids[i] for i in ds.sequence(0)] == ["i2", "i7", "i1", "i5", "i3", "i9"]
    nine = ds.items[ds.item_raw_ids.index("i9")]
    assert nine["title"] == "Nine, the item" and nine["year"] == 1999
    assert nine["genres"] == ["Jazz", "Rock"] and nine["description"] == "A long text."
    # dave's and erin's items are not in items.csv: they keep their id as title.
    assert ds.items[ds.item_raw_ids.index("j0")]["title"] == "j0"
    assert ds.stats["items_without_metadata"] == 20


def test_generic_without_timestamps_uses_file_order(tmp_path):
    _write(tmp_path, with_ts=False)
    ds = prepare.prepare(data_config(tmp_path, reader="generic"), tmp_path / "w")
    assert [ds.item_raw_ids[i] for i in ds.sequence(0)] == ["i9", "i3", "i5", "i1", "i7", "i2"]


def test_generic_missing_items_file(tmp_path):
    _write(tmp_path)
    (tmp_path / "items.csv").unlink()
    with pytest.raises(DataError, match=r"items.csv: file not found"):
        prepare.build(data_config(tmp_path, reader="generic"))
