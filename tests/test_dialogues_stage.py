"""`launch/evaluate_dialogues.py` end to end on the trained tiny workdir and the ReDial fixture."""

import json
import pathlib
import subprocess
import sys

import dialogue_helpers as H
import numpy as np
import pytest

from configs import tiny
from latentcrs_jax.data import dataset
from latentcrs_jax.dialogues import metrics, protocol, readers
from latentcrs_jax.dialogues import stage as dialogues_stage
from latentcrs_jax.dialogues.resolve import Resolver
from latentcrs_jax.evaluation import one_turn
from latentcrs_jax.text import encode

# The session's tiny workdirs: one xdist worker runs all their users (`--dist loadgroup`).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_workdir")]

REPO = pathlib.Path(__file__).resolve().parents[1]
SYSTEMS = [
    "latentcrs_f",
    "latentcrs_v",
    "latentcrs",
    "posterior",
    "backbone",
    "fusion",
    "late_fusion",
    "no_kl",
    "no_rec",
    "text",
    "popularity",
]


@pytest.fixture(scope="module")
def evaluated(tiny_trained_workdir):
    md, out = dialogues_stage.run(
        tiny.get_config(), tiny_trained_workdir, H.REDIAL, movies=H.REDIAL_MOVIES, batch_size=16
    )
    return md, out


def test_every_system_is_scored_and_written(evaluated, tiny_trained_workdir):
    md, out = evaluated
    assert sorted(out["results"]) == sorted(SYSTEMS)
    folder = tiny_trained_workdir / "eval" / "dialogues"
    assert (folder / "redial_fixture.md").read_text() == md + "\n"
    assert json.loads((folder / "redial_fixture.json").read_text())["contexts"] == out["contexts"]
    assert "| LatentCRS^F (stated features) |" in md and "| popularity |" in md
    assert "| LatentCRS^V (stand-in validator, no LLM) |" in md
    for row in out["results"].values():
        for view in ("masked", "unmasked"):
            r = row[view]
            assert r["targets"] == out["protocol"]["targets"]
            assert 0 <= r["recall@1"] <= r["recall@10"] <= r["recall@50"] <= 1
            assert 0 <= r["ndcg@10"] <= r["recall@10"]
            assert row[f"{view}_strict"]["targets"] == out["protocol"]["strict_targets"]


def test_popularity_row_matches_a_numpy_recomputation(evaluated, tiny_trained_workdir):
    _, out = evaluated
    ds = dataset.load(tiny_trained_workdir / "data")
    contexts, _ = protocol.build_contexts(
        readers.read(H.REDIAL, "redial", H.REDIAL_MOVIES),
        Resolver(ds.items),
        history_len=ds.splits["test"].history.shape[1],
    )
    counts = one_turn.popularity_scores(ds)
    ranks = []
    for c in contexts:
        s = counts.astype(np.float64).copy()
        s[0] = -np.inf
        s[list(c.history)] = -np.inf
        for t in c.targets:  # the tie rule by hand: higher count, then lower id
            ranks.append(int(np.sum(s > s[t]) + np.sum(s[:t] == s[t])))
    assert out["results"]["popularity"]["masked"] == pytest.approx(metrics.summarise(ranks))


def test_a_rerun_encodes_nothing(evaluated, tiny_trained_workdir, monkeypatch):
    _, first = evaluated
    encoded = []
    real = encode.TextEncoder.encode
    monkeypatch.setattr(
        encode.TextEncoder,
        "encode",
        lambda self, texts, *a, **k: encoded.append(len(texts)) or real(self, texts, *a, **k),
    )
    _, again = dialogues_stage.run(
        tiny.get_config(),
        tiny_trained_workdir,
        H.REDIAL,
        movies=H.REDIAL_MOVIES,
        name="again",
        batch_size=16,
    )
    assert sum(encoded) == 0  # every context came from the workdir's embedding cache
    assert again["results"] == first["results"]


def _binary(*args):
    return subprocess.run(
        [sys.executable, "-m", "launch.evaluate_dialogues", "--config=configs/tiny.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_binary_errors_are_one_line(tiny_trained_workdir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(H.REDIAL.read_text(encoding="utf-8").splitlines()[0] + "\n{oops\n")
    proc = _binary(f"--workdir={tiny_trained_workdir}", f"--dialogues={bad}", "--name=bad")
    assert proc.returncode == 1
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert f"{bad}:2: not a redial conversation" in line and "--skip_bad_lines" in line
    (tmp_path / "untrained").mkdir()
    proc = _binary(f"--workdir={tmp_path / 'untrained'}", f"--dialogues={H.REDIAL}")
    assert (
        proc.returncode == 1 and "error: " in proc.stderr and "no trained backbone" in proc.stderr
    )
