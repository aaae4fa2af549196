"""Tests of the MovieLens readers, preprocessing and the prepared dataset on disk."""

import filecmp

import numpy as np
import pytest
from conftest import shared_path
from data_helpers import data_config, write_ml_dat

from configs import ml1m, ml_latest_small, tiny
from latentcrs_jax.data import dataset, prepare, readers
from latentcrs_jax.data.errors import DatasetMismatchError


def _movies(n):
    return [f"{i}::Movie {i} ({1990 + i})::Drama|Comedy" for i in range(1, n + 1)]


# Two users rating 12 other movies each, so every user has candidates for 10 negatives.
FILLER = [f"{1000 + (i > 112)}::{i}::5::{i}" for i in range(101, 125)]
MOVIES = _movies(6) + [f"{i}::Filler {i} (2000)::Drama" for i in range(101, 125)]


def test_ml_dat_filters_orders_and_ids(tmp_path):
    # User 7 rates in reverse time order, with a tie (items 3 and 4 at t=50 keep file order);
    # a rating of 3 is dropped; user 2 keeps only 4 items and is dropped.
    ratings = [
        "7::5::5::90",
        "7::3::4::50",
        "7::4::5::50",
        "7::2::3::40",
        "7::1::4::10",
        "7::6::4::95",
        "2::1::5::1",
        "2::2::5::2",
        "2::3::5::3",
        "2::4::5::4",
        "2::5::2::5",
    ]
    root = write_ml_dat(tmp_path / "ml", FILLER + ratings, MOVIES)
    ds = prepare.prepare(data_config(root), tmp_path / "w")
    assert ds.user_raw_ids == ["7", "1000", "1001"]
    # Time order 1(10), 3(50), 4(50), 5(90), 6(95): ids by first appearance.
    assert [ds.item_raw_ids[i] for i in ds.sequence(0)] == ["1", "3", "4", "5", "6"]
    assert ds.sequence(0).tolist() == [1, 2, 3, 4, 5]
    assert ds.sequence(1).tolist() == list(range(6, 18))
    assert ds.items[1]["title"] == "Movie 1" and ds.items[1]["year"] == 1991
    assert ds.items[1]["genres"] == ["Drama", "Comedy"]
    assert ds.items[0]["raw_id"] == ""  # PAD


def test_users_sorted_numerically(tmp_path):
    ratings = [f"{u}::{i}::5::{i}" for u in (10, 9, 100) for i in range(1, 6)]
    root = write_ml_dat(tmp_path / "ml", ratings + FILLER, MOVIES)
    ds = prepare.prepare(data_config(root), tmp_path / "w")
    assert ds.user_raw_ids == ["9", "10", "100", "1000", "1001"]


def test_bundled_default_reads_tags_and_text(tmp_path):
    cfg = ml_latest_small.get_config()
    raw = readers.read(cfg.data)
    toy = raw.item_meta["1"]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995
    assert "Animation" in toy["genres"]
    assert toy["tags"] and all(t == t.lower() for t in toy["tags"])
    assert len(toy["tags"]) <= cfg.data.max_tags
    assert toy["text"].startswith("Toy Story (1995). Genres: ")


def test_prepare_is_deterministic_byte_for_byte(tmp_path):
    cfg = tiny.get_config().data
    prepare.prepare(cfg, tmp_path / "a")
    prepare.prepare(cfg, tmp_path / "b")
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors and len(match) == len(names)


def test_prepare_skips_when_done_and_refuses_other_config(tmp_path):
    cfg = tiny.get_config().data
    prepare.prepare(cfg, tmp_path)
    manifest = tmp_path / "data" / "manifest.json"
    mtime = manifest.stat().st_mtime_ns
    prepare.prepare(cfg, tmp_path)
    assert manifest.stat().st_mtime_ns == mtime
    other = tiny.get_config().data
    other.max_window = 10
    with pytest.raises(DatasetMismatchError, match="max_window: dataset has 25, config has 10"):
        prepare.prepare(other, tmp_path)
    with pytest.raises(DatasetMismatchError):
        dataset.load(tmp_path / "data", other)


def test_load_detects_changed_files(tmp_path):
    cfg = tiny.get_config().data
    prepare.prepare(cfg, tmp_path)
    target = tmp_path / "data" / "test_target.npy"
    np.save(target, np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="test_target.npy.*changed since prepare"):
        dataset.load(tmp_path / "data")


def test_sample_tables_are_consistent(tmp_path):
    ds = prepare.prepare(tiny.get_config().data, tmp_path)
    for name, s in ds.splits.items():
        assert s.history.shape == (len(s), 24) and s.negatives.shape == (len(s), 10)
        for k in range(len(s)):
            seq = ds.sequence(int(s.user[k]))
            hist = s.history[k][s.history[k] > 0]
            # The history + target is a contiguous window of the user's sequence.
            window = np.concatenate([hist, [s.target[k]]])
            starts = [
                j
                for j in range(len(seq) - len(window) + 1)
                if np.array_equal(seq[j : j + len(window)], window)
            ]
            assert starts, (name, k)
            assert not set(s.negatives[k].tolist()) & set(seq.tolist())
    assert ds.sample_key("train", 0) == f"{ds.user_raw_ids[0]}_raw"
    assert ds.sample_key("test", 3) == f"{ds.user_raw_ids[3]}_test"


def test_export_sequences(tmp_path):
    ratings = [f"{u}::{i}::5::{10 - i}" for u in (12, 3) for i in range(1, 6)]
    root = write_ml_dat(tmp_path / "ml", FILLER + ratings, MOVIES)
    ds = prepare.prepare(data_config(root), tmp_path / "w")
    out = tmp_path / "seqs.tsv"
    dataset.export_sequences(ds, out)
    lines = out.read_text().splitlines()
    assert lines[:2] == ["3\t5 4 3 2 1", "12\t5 4 3 2 1"]
    assert lines[2] == "1000\t" + " ".join(str(i) for i in range(101, 113))


@pytest.mark.slow
@pytest.mark.needs_shared
def test_ml1m_matches_the_paper_counts(tmp_path):
    shared_path("data", "ml-1m", "ratings.dat")
    ds = prepare.prepare(ml1m.get_config().data, tmp_path)
    st = ds.stats
    assert (st["users"], st["items"], st["interactions"]) == (6034, 3533, 575272)
    assert st["train_samples"] == 35649 == 6034 + 5 * 5923
    assert st["valid_samples"] == st["test_samples"] == 6034
