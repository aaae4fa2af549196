"""The sensitivity sweep (evaluation/sensitivity.py, launch/sensitivity.py): grid checks, the
points it runs and what each reuses, resuming, the JSON and plot, and the report's section."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from configs import tiny
from latentcrs_jax import artifacts, report
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.evaluation import sensitivity

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- grid (fast)
def test_grids_parse_and_keep_their_order():
    assert sensitivity.parse_ks(["128", " 64", "1024"]) == (128, 64, 1024)
    assert sensitivity.parse_kl_weights(["0.1", "2", "0"]) == (0.1, 2.0, 0.0)
    assert sensitivity.parse_ks([]) == ()


@pytest.mark.parametrize(
    "values, message",
    [
        (["64", "abc"], r"--ks: 'abc' is not an integer"),
        (["1.5"], r"--ks: '1.5' is not an integer"),
        (["1"], r"--ks: K=1 is below 2"),
        (["-4"], r"--ks: K=-4 is below 2"),
        (["64", "064"], r"--ks: K=64 is listed twice"),
    ],
)
def test_bad_ks_are_user_errors(values, message):
    with pytest.raises(UserInputError, match=message):
        sensitivity.parse_ks(values)


@pytest.mark.parametrize(
    "values, message",
    [
        (["x"], r"--kl_weights: 'x' is not a number"),
        (["-0.1"], r"'-0.1' is not a finite number >= 0"),
        (["nan"], r"'nan' is not a finite number >= 0"),
        (["inf"], r"'inf' is not a finite number >= 0"),
        (["1", "1.0"], r"--kl_weights: 1 is listed twice"),
    ],
)
def test_bad_kl_weights_are_user_errors(values, message):
    with pytest.raises(UserInputError, match=message):
        sensitivity.parse_kl_weights(values)


def test_k_above_the_training_sequences_is_a_user_error():
    sensitivity.check_ks([2, 603], 603)
    with pytest.raises(UserInputError, match=r"K=604, 1024 exceeds the 603 training sequences"):
        sensitivity.check_ks([64, 604, 1024], 603)


def test_grid_holds_the_other_value_and_shares_the_default_point():
    points = sensitivity.grid([32, 64], [0.5, 1.0], k0=64, w0=1.0)
    assert [(p.series, p.num_intents, p.kl_weight, p.name) for p in points] == [
        ("K", 32, 1.0, "K=32"),
        ("K", 64, 1.0, "K=64"),
        ("kl_weight", 64, 0.5, "kl=0.5"),
        ("kl_weight", 64, 1.0, "K=64"),  # the same run as the K point at the default
    ]


def test_point_config_changes_only_the_point_values():
    config = tiny.get_config()
    point = sensitivity.Point("kl_weight", 7, 0.25, "kl=0.25")
    cfg = sensitivity.point_config(config, point, seed=3)
    assert (cfg.pretrain.num_intents, cfg.em.e_kl_weight, cfg.em.m_kl_weight) == (7, 0.25, 0.25)
    assert cfg.em_seeds == (3,) and cfg.em_plans == ("latentcrs",)
    assert config.pretrain.num_intents == 4 and config.em.m_kl_weight == 1.0  # not mutated
    cfg.em.m_kl_weight, cfg.em.e_kl_weight = 1.0, 1.0
    cfg.pretrain.num_intents, cfg.em_seeds, cfg.em_plans = 4, config.em_seeds, config.em_plans
    assert cfg.to_dict() == config.to_dict()


def test_the_binary_reports_a_bad_grid_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.sensitivity", "--config=configs/tiny.py"]
        + [f"--workdir={tmp_path / 'w'}", "--ks=8,x"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: --ks: 'x' is not an integer"
    assert not (tmp_path / "w").exists()  # nothing ran; the new workdir is removed again


@pytest.mark.parametrize(
    "ks, kls, seed, message", [((), (), 0, "both empty"), ((4,), (), -1, "--seed")]
)
def test_an_empty_grid_or_a_negative_seed_is_refused_before_anything_runs(
    tmp_path, ks, kls, seed, message
):
    with pytest.raises(UserInputError, match=message):
        sensitivity.run(tiny.get_config(), tmp_path / "w", ks, kls, seed=seed)
    assert not (tmp_path / "w").exists()


# -------------------------------------------------------------------------- report (fast)
def _result(k_points, kl_points):
    def point(k, w, hit, ndcg):
        return {
            "num_intents": k,
            "kl_weight": w,
            "dir": f"K={k}",
            "hit@10": hit,
            "ndcg@10": ndcg,
            "backbone": {"hit@10": 0.3, "ndcg@10": 0.15},
        }

    return {
        "dataset": "toy",
        "seed": 0,
        "plan": "latentcrs",
        "defaults": {"num_intents": 64, "kl_weight": 1.0},
        "K": [point(k, 1.0, *m) for k, m in k_points],
        "kl_weight": [point(64, w, *m) for w, m in kl_points],
    }


def test_table_lists_every_point_sorted_per_series():
    result = _result([(128, (0.2, 0.1)), (64, (0.25, 0.125))], [(2.0, (0.3, 0.2))])
    lines = report.sensitivity_table(result).splitlines()
    assert lines[2:] == [
        "| K | 64 | 1 | 0.2500 | 0.1250 |",
        "| K | 128 | 1 | 0.2000 | 0.1000 |",
        "| kl_weight | 64 | 2 | 0.3000 | 0.2000 |",
    ]


def test_report_shows_the_sweep_only_when_it_exists(tmp_path):
    assert "Sensitivity" not in report.write_report(tmp_path).read_text()
    result = _result([(64, (0.25, 0.125)), (128, (0.2, 0.1))], [(0.1, (0.3, 0.2))])
    (tmp_path / "sensitivity").mkdir()
    (tmp_path / "sensitivity" / "sensitivity.json").write_text(json.dumps(result))
    page = report.write_report(tmp_path).read_text()
    assert "## Sensitivity to K and the KL weight" in page
    assert "![sensitivity](sensitivity.png)" in page
    assert "| kl_weight | 64 | 0.1 | 0.3000 | 0.2000 |" in page
    assert (tmp_path / "report" / "sensitivity.png").read_bytes()[:8] == PNG_MAGIC


def test_plot_takes_an_empty_series(tmp_path):
    out = report.plot_sensitivity(_result([], [(0.5, (0.3, 0.2))]), tmp_path / "s.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


# ----------------------------------------------------------------------- the sweep (slow)
KS, KLS = (3, 4), (0.5, 1.0)  # tiny: K = 4 and KL weight 1 are the config's
# The sweep's tests run on the worker of the other users of the session's tiny workdirs
# (`--dist loadgroup`), so the module's sweep runs once.


@pytest.fixture(scope="module")
def swept(tiny_trained_workdir):
    """The tiny trained workdir after a sweep over K in {3, 4} and the KL weight in {0.5, 1}."""
    workdir = tiny_trained_workdir
    lines = []
    sensitivity.run(tiny.get_config(), workdir, KS, KLS, seed=0, emit=lines.append)
    return workdir, lines


def _mtimes(root):
    return {
        p: p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file()
        and not p.is_symlink()
        and "sensitivity.json" not in p.name
        and p.suffix != ".png"
    }


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_workdir")
def test_sweep_writes_every_point_and_the_plot(swept):
    workdir, lines = swept
    result = sensitivity.load(workdir)
    assert result["defaults"] == {"num_intents": 4, "kl_weight": 1.0}
    assert [(p["num_intents"], p["kl_weight"]) for p in result["K"]] == [(3, 1.0), (4, 1.0)]
    assert [(p["num_intents"], p["kl_weight"]) for p in result["kl_weight"]] == [(4, 0.5), (4, 1.0)]
    assert result["kl_weight"][1] == result["K"][1]  # one run serves both series
    for p in result["K"] + result["kl_weight"]:
        assert 0 <= p["ndcg@10"] <= p["hit@10"] <= 1
        # Every point ranks with the workdir's frozen backbone.
        assert p["backbone"] == result["K"][0]["backbone"]
    png = workdir / "sensitivity" / "sensitivity.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert sum("test HIT@10" in line for line in lines) == 4


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_workdir")
def test_each_point_trains_only_what_depends_on_it(swept):
    workdir, _ = swept
    root = workdir / "sensitivity"
    for name in ("K=3", "K=4", "kl=0.5"):
        assert os.readlink(root / name / "data") == os.path.join("..", "..", "data")
        assert (root / name / "embeddings").is_symlink()
    # The KL points and the default point read the workdir's backbone and intents as they are.
    assert (root / "K=4" / "pretrain").is_symlink() and (root / "kl=0.5" / "pretrain").is_symlink()
    # K = 3: the same backbone, its own K-means intents (unit rows) and assignments.
    k3 = artifacts.pretrain_dir(root / "K=3")
    assert not k3.is_symlink()
    base = artifacts.pretrain_dir(workdir)
    assert (k3 / "backbone.msgpack").read_bytes() == (base / "backbone.msgpack").read_bytes()
    intents = np.load(k3 / "intents.npy")
    assert intents.shape == (3, tiny.get_config().backbone.hidden)
    np.testing.assert_allclose(np.linalg.norm(intents, axis=1), 1.0, rtol=1e-5)
    assignments = np.load(k3 / "assignments.npy")
    assert set(np.unique(assignments)) <= {-1, 0, 1, 2}
    # The default point is the workdir's own LatentCRS run: its phases were reused, not redone.
    em_final = artifacts.em_phase_dir(workdir, 0, "em") / "final_metrics.json"
    final = json.loads(em_final.read_text())
    point = sensitivity.load(workdir)["K"][1]
    assert point["ndcg@10"] == final["test/prior/ndcg@10"]
    reused = artifacts.em_phase_dir(root / "K=4", 0, "em") / artifacts.BEST_PARAMS
    own = artifacts.em_phase_dir(workdir, 0, "em") / artifacts.BEST_PARAMS
    assert reused.read_bytes() == own.read_bytes()
    assert not (artifacts.em_phase_dir(root / "K=4", 0, "em") / "checkpoints").exists()
    # Only the LatentCRS plan runs in a point.
    phases = sorted(p.name for p in (root / "kl=0.5" / "em" / "seed0").iterdir())
    assert phases == ["em", "posterior", "prior"]


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_workdir")
def test_a_second_sweep_skips_finished_points_and_the_report_shows_it(swept):
    workdir, _ = swept
    before = _mtimes(workdir / "sensitivity")
    first = sensitivity.load(workdir)
    lines = []
    sensitivity.run(tiny.get_config(), workdir, KS, KLS, seed=0, emit=lines.append)
    assert _mtimes(workdir / "sensitivity") == before  # nothing retrained or refitted
    assert sensitivity.load(workdir) == first
    page = report.build(tiny.get_config(), workdir).read_text()
    assert "## Sensitivity to K and the KL weight" in page
    assert f"| K | 3 | 1 | {first['K'][0]['hit@10']:.4f} |" in page
