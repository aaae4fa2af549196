"""Tests for latentcrs_jax.report: coherence statistics, PCA and the written report."""

import json

import numpy as np
import pytest

from latentcrs_jax import report


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _fake_workdir(root):
    for stage in ("posterior", "em"):
        recs = [
            {
                "epoch": e,
                "train/loss": 5.0 - e,
                "train/E/loss": 4.0 - e,
                "valid/prior/ndcg@10": 0.01 * e,
                "valid/posterior/ndcg@10": 0.02,
                "valid/backbone/ndcg@10": 0.05,
            }
            for e in range(3)
        ]
        _write_jsonl(root / "em" / "seed0" / stage / "metrics.jsonl", recs + [{"final/x": 1}])
    _write_jsonl(
        root / "pretrain" / "metrics.jsonl",
        [{"epoch": e, "train/loss": 8.0 - e, "valid/ndcg@20": 0.01 * e} for e in range(4)],
    )
    intents = np.eye(4, 6, dtype=np.float32)
    np.save(root / "pretrain" / "intents.npy", intents)
    (root / "eval").mkdir()
    multi = {
        "settings": {"rounds": 3, "systems": ["a", "b"]},
        "systems": {
            "a": {"label": "sys A", "success_rate": [0.1, 0.2, 0.3], "samples": 10},
            "b": {"label": "sys B", "success_rate": [0.0, 0.1, 0.1], "samples": 10},
        },
    }
    (root / "eval" / "multi_turn.json").write_text(json.dumps(multi))
    (root / "eval" / "one_turn.md").write_text("| model | HIT@10 |\n|---|---|\n| m1 | 0.5 |\n")
    return intents


def test_read_metrics_skips_final_record(tmp_path):
    _fake_workdir(tmp_path)
    recs = report.read_metrics(tmp_path / "em" / "seed0" / "em" / "metrics.jsonl")
    assert [r["epoch"] for r in recs] == [0, 1, 2]


def test_intent_coherence_counts_and_purity():
    assignment = np.array([0, 0, 0, 1, 2, 2])
    attrs = [["Drama"], ["Drama", "Comedy"], ["Comedy"], ["Action"], [], ["Horror"]]
    stats = report.intent_coherence(assignment, attrs, num_intents=4)
    assert [s.users for s in stats] == [3, 1, 2, 0]
    # Comedy and Drama both appear twice in intent 0: ties break by name.
    assert stats[0].top_attributes == (("Comedy", 2), ("Drama", 2))
    assert stats[0].purity == pytest.approx(2 / 3)
    assert stats[1].purity == 1.0
    assert stats[2].purity == pytest.approx(0.5)
    assert np.isnan(stats[3].purity) and stats[3].top_attributes == ()
    with pytest.raises(ValueError):
        report.intent_coherence(assignment[:2], attrs, num_intents=4)


def test_assign_intents_is_scale_invariant():
    rng = np.random.default_rng(0)
    states, intents = rng.normal(size=(50, 8)), rng.normal(size=(5, 8))
    a = report.assign_intents(states, intents)
    np.testing.assert_array_equal(a, np.argmax(states @ intents.T, axis=1))
    np.testing.assert_array_equal(a, report.assign_intents(states * 7.0, intents))


def test_pca_2d_recovers_dominant_axes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([10.0, 3.0, 0.1, 0.1, 0.1])
    (p,) = report.pca_2d(x, x)
    assert p.shape == (200, 2)
    # The projection keeps the two large-variance directions (up to sign).
    np.testing.assert_allclose(np.abs(p[:, 0]), np.abs(x[:, 0] - x[:, 0].mean()), atol=0.5)
    assert p[:, 0].var() > p[:, 1].var() > 1.0


def test_write_report_writes_pngs_and_markdown(tmp_path):
    _fake_workdir(tmp_path)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(40, 6))
    targets = rng.integers(0, 3, size=40)
    items = [{"genres": ["Drama"]}, {"genres": ["Comedy", "Drama"]}, {"categories": ["Toys"]}]
    path = report.write_report(tmp_path, states, targets, items)
    out = tmp_path / "report"
    assert path == out / "report.md"
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {
        "pretrain_curve.png",
        "em_curves.png",
        "intent_map.png",
        "intent_purity.png",
        "multi_turn.png",
    }
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in path.read_text()
    text = path.read_text()
    assert "| m1 | 0.5 |" in text  # one-turn table included
    assert "| intent | users |" in text


def test_write_report_skips_missing_sections(tmp_path):
    _write_jsonl(tmp_path / "pretrain" / "metrics.jsonl", [{"epoch": 0, "train/loss": 1.0}])
    path = report.write_report(tmp_path)
    assert {p.name for p in (tmp_path / "report").glob("*.png")} == {"pretrain_curve.png"}
    text = path.read_text()
    assert "Multi-turn" not in text and "One-turn" not in text and "Intent map" not in text
    assert "Human dialogues" not in text


def test_write_report_includes_each_dialogue_table(tmp_path):
    folder = tmp_path / "eval" / "dialogues"
    folder.mkdir(parents=True)
    (folder / "redial_test.md").write_text("| system | R@1 |\n|---|---|\n| popularity | 0.1 |\n")
    (folder / "logs.json").write_text("{}")  # only the Markdown tables are included
    text = report.write_report(tmp_path).read_text()
    assert "## Human dialogues\n\n### redial_test\n\n| system | R@1 |" in text
    assert "logs" not in text
