"""The scaling benchmark's exponent fit and its driver (child processes, JSON, plot)."""

import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

from latentcrs_jax import scale_benchmark


def test_fit_recovers_known_exponents_and_skips_a_fixed_axis():
    sizes = [(10_000, 10_000), (30_000, 10_000), (10_000, 30_000), (100_000, 50_000)]
    pts = [(u, n, 2e-6 * u**1.0 * n**0.5) for u, n in sizes]
    fit = scale_benchmark.fit_exponents(pts)
    assert fit == pytest.approx({"exponent_users": 1.0, "exponent_items": 0.5}, abs=1e-9)
    fixed = [(u, 10_000, 3e-4 * u**1.2) for u in (1_000, 2_000, 8_000)]
    assert scale_benchmark.fit_exponents(fixed) == pytest.approx({"exponent_users": 1.2})
    assert scale_benchmark.fit_exponents([(1_000, 1_000, 1.0)]) == {}


def test_figures_take_each_stage_main_figure():
    rows = [
        {"users": 10, "items": 20, "stages": {"pretrain": {"epoch_s": 2.0, "rank_all_users_s": 3.0},
                                              "prepare": {"wall_s": 1.0, "status": "ok"}}},
        {"users": 30, "items": 20, "stages": {"pretrain": {"status": "killed after 5 s"}}},
        {"users": 30, "items": 40, "stages": {"prepare": {"wall_s": 4.0, "items": 33}}},
    ]  # fmt: skip
    assert scale_benchmark.figures(rows, catalogue=False) == {
        "prepare": [(10, 20, 1.0), (30, 40, 4.0)],
        "pretrain": [(10, 20, 2.0)],
        "pretrain_rank": [(10, 20, 3.0)],
    }
    # The fit sees the prepared catalogue (33 of 40 generated items were used), else nominal.
    assert scale_benchmark.figures(rows)["prepare"] == [(10, 20, 1.0), (30, 33, 4.0)]


def test_driver_runs_stages_in_children_and_writes_json_and_plot(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.benchmark_scale", "--config=configs/tiny.py",
         "--sizes=200x100,400x100", "--stages=synthesize,prepare", f"--out_dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "scale.json").read_text())
    assert [(r["users"], r["items"]) for r in report["sizes"]] == [(200, 100), (400, 100)]
    for row in report["sizes"]:
        prep = row["stages"]["prepare"]
        assert prep["status"] == "ok" and prep["users"] == row["users"]
        assert prep["interactions"] == row["stages"]["synthesize"]["interactions"]
        assert 0 < prep["peak_rss_gib"] < 4
    assert set(report["exponents"]["prepare"]) == {"exponent_users"}
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "scale.md").read_text().splitlines()
    assert table[2].startswith("| 200 | 100 (") and " GiB) | " in table[2]


def test_driver_rejects_a_bad_size(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.benchmark_scale", "--config=configs/tiny.py",
         "--sizes=10k", f"--out_dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --sizes: '10k' is not USERSxITEMS, e.g. 10000x10000"
    )


def test_merge_reports_finished_runs_together(tmp_path):
    def run_file(name, sizes):
        rows = [
            {"users": u, "items": n, "stages": {"prepare": {"wall_s": 1e-4 * u, "items": n - 1,
                                                            "peak_rss_gib": 0.1}}}
            for u, n in sizes
        ]  # fmt: skip
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"machine": {"cpu": "x"}, "command": name, "sizes": rows}))
        return path

    a, b = run_file("a", [(1_000, 50)]), run_file("b", [(3_000, 50), (9_000, 50)])
    out = tmp_path / "all"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.benchmark_scale", f"--merge={a},{b}", f"--out_dir={out}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "scale.json").read_text())
    assert report["command"] == ["a", "b"] and len(report["sizes"]) == 3
    assert report["exponents"]["prepare"] == pytest.approx({"exponent_users": 1.0})
    assert (out / "scale.md").read_text().splitlines()[3].startswith("| 3000 | 50 (49) | ")
    bad = subprocess.run(
        [sys.executable, "-m", "launch.benchmark_scale", f"--merge={tmp_path}/none.json",
         f"--out_dir={out}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error: --merge")
