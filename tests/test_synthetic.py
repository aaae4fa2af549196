"""The synthetic dataset generator: determinism, the generic format, its structure, errors."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT
from data_helpers import data_config

from latentcrs_jax.data import prepare, synthetic
from latentcrs_jax.errors import UserInputError


def _synthesize(out, *args):
    return subprocess.run(
        [sys.executable, "-m", "launch.synthesize", f"--out={out}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _rows(cfg):
    cat = synthetic.catalogue(cfg)
    users, items, stamps = (np.concatenate(x) for x in zip(*synthetic.interaction_chunks(cfg, cat)))
    return cat, users, items, stamps


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    cfg = synthetic.SynthConfig(num_users=300, num_items=200, seed=3)
    synthetic.write(cfg, tmp_path / "a")
    synthetic.write(cfg, tmp_path / "b")
    synthetic.write(synthetic.SynthConfig(num_users=300, num_items=200, seed=4), tmp_path / "c")
    for name in ("interactions.csv", "items.csv"):
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "b" / name).read_bytes()
        assert a != (tmp_path / "c" / name).read_bytes()


def test_binary_output_loads_through_the_generic_reader_and_prepare(tmp_path):
    proc = _synthesize(tmp_path / "d", "--num_users=120", "--num_items=80", "--mean_length=9")
    assert proc.returncode == 0, proc.stderr
    ds = prepare.prepare(data_config(tmp_path / "d", reader="generic"), tmp_path / "w")
    lines = (tmp_path / "d" / "interactions.csv").read_text().splitlines()
    assert lines[0] == "user_id,item_id,timestamp"
    # Every user has 5+ distinct-time rows, so prepare keeps every user and every row.
    assert len(ds.user_raw_ids) == 120 and ds.stats["interactions"] == len(lines) - 1
    assert ds.stats["items_without_metadata"] == 0
    first = ds.items[1]  # 0 is PAD
    assert first["title"].startswith("The ") and first["description"] and first["genres"]
    assert 1950 <= first["year"] <= 2024
    # Each user's sequence is its file rows in order (timestamps increase within a user).
    user1 = [r.split(",")[1] for r in lines[1:] if r.startswith("1,")]
    assert [ds.item_raw_ids[i] for i in ds.sequence(ds.user_raw_ids.index("1"))] == user1


def test_popularity_is_heavy_tailed_and_tastes_drive_sequences():
    cfg = synthetic.SynthConfig(num_users=3000, num_items=1000, seed=0)
    cat, users, items, stamps = _rows(cfg)
    counts = np.sort(np.bincount(items, minlength=cfg.num_items + 1)[1:])[::-1]
    assert counts[:100].sum() > 0.4 * counts.sum()  # top 10% of items: 4x their share
    assert len(users) == pytest.approx(cfg.num_users * cfg.mean_length, rel=0.1)
    same_user = users[1:] == users[:-1]
    assert (stamps[1:] > stamps[:-1])[same_user].all()
    taste = cat.taste[items - 1]
    consecutive = (taste[1:] == taste[:-1])[same_user].mean()
    chance = ((np.bincount(taste) / len(taste)) ** 2).sum()
    assert consecutive > 0.6 and chance < 0.15  # stay = 0.8 plus the mixture's own draws


def test_bad_sizes_are_user_input_errors(tmp_path):
    for kwargs, match in (
        ({"num_users": 0, "num_items": 100}, "num_users"),
        ({"num_users": 10, "num_items": 3}, "num_items"),
        ({"num_users": 10, "num_items": 100, "mean_length": 2}, "mean_length"),
        ({"num_users": 10, "num_items": 100, "num_tastes": 0}, "num_tastes"),
    ):
        with pytest.raises(UserInputError, match=match):
            synthetic.write(synthetic.SynthConfig(**kwargs), tmp_path)
    proc = _synthesize(tmp_path, "--num_users=-5")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: --num_users must be >= 1, got -5"
