"""Sensitivity sweep (the paper's Figure 3): LatentCRS's test HIT@10 and NDCG@10 against the
number of intents K and against the KL weight, one EM seed per point.

Each point varies one value and holds the other at the config's: K is `pretrain.num_intents`;
the KL weight sets `em.e_kl_weight` and `em.m_kl_weight` together (the E-step's and the
M-step's KL(q || p); the posterior phase keeps its KL at 0). A point trains only what depends
on its value, into `<workdir>/sensitivity/<point>/`, and reads the workdir's shared stages
(data, utterances, their embeddings, backbone) through relative symlinks:
* a K point refits the K-means intents on the workdir's backbone into its own `pretrain/`
  (with a manifest fingerprinted by the backbone and the K-means settings), then runs the EM
  phases. With the ICLRec loss the backbone itself trains against its K intents, so there a
  K point pretrains its own backbone (the pretrain stage, on the shared data);
* a KL-weight point runs the EM phases on the workdir's backbone and intents.
Only the LatentCRS plan (posterior, prior, EM phases) runs, for one seed. The EM phases skip
themselves when their manifests match (`em_stage`), so a rerun skips finished points and
resumes an interrupted one; the point at the config's own K and weight starts from copies of
the workdir's finished phases (their fingerprints decide whether they are reused).

Output: `<workdir>/sensitivity/sensitivity.json` (rewritten after each point) and
`sensitivity.png` (report.py's `plot_sensitivity`; the report shows both when the file exists).
"""

import copy
import dataclasses
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence

from absl import logging

from latentcrs_jax import artifacts, fileio, stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.simulator import stage as simulate_stage
from latentcrs_jax.text import stage as encode_stage
from latentcrs_jax.training import em, em_stage

DEFAULT_KS = (64, 128, 256, 512, 1024)  # the paper's Figure 3
DEFAULT_KL_WEIGHTS = (0.1, 0.5, 1.0, 2.0)
PLAN = "latentcrs"
HEAD = "prior"  # the LatentCRS row of the one-turn table: the prior mixture after EM
METRICS = ("hit@10", "ndcg@10")


def sensitivity_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """`<workdir>/sensitivity`."""
    return pathlib.Path(workdir) / "sensitivity"


def result_path(workdir: str | pathlib.Path) -> pathlib.Path:
    """`<workdir>/sensitivity/sensitivity.json`."""
    return sensitivity_dir(workdir) / "sensitivity.json"


# ------------------------------------------------------------------------------------- grid
def parse_ks(values: Sequence) -> tuple[int, ...]:
    """The K grid: distinct integers >= 2 (an empty list: no K points).

    Raises:
      UserInputError: a value is not an integer, below 2, or repeated.
    """
    ks = []
    for v in values:
        try:
            k = int(str(v).strip())
        except ValueError:
            raise UserInputError(f"--ks: {v!r} is not an integer") from None
        if k < 2:
            raise UserInputError(f"--ks: K={k} is below 2 (K-means needs at least 2 intents)")
        if k in ks:
            raise UserInputError(f"--ks: K={k} is listed twice")
        ks.append(k)
    return tuple(ks)


def parse_kl_weights(values: Sequence) -> tuple[float, ...]:
    """The KL-weight grid: distinct finite numbers >= 0 (an empty list: no KL points).

    Raises:
      UserInputError: a value is not a number, negative, not finite, or repeated.
    """
    weights = []
    for v in values:
        try:
            w = float(str(v).strip())
        except ValueError:
            raise UserInputError(f"--kl_weights: {v!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise UserInputError(f"--kl_weights: {v!r} is not a finite number >= 0")
        if w in weights:
            raise UserInputError(f"--kl_weights: {w:g} is listed twice")
        weights.append(w)
    return tuple(weights)


def check_ks(ks: Sequence[int], num_sequences: int) -> None:
    """K-means needs at least K training sequences.

    Raises:
      UserInputError: a K exceeds `num_sequences`.
    """
    too_many = [k for k in ks if k > num_sequences]
    if too_many:
        raise UserInputError(
            f"--ks: K={', '.join(map(str, too_many))} exceeds the {num_sequences} training "
            "sequences K-means clusters on this dataset; choose smaller values"
        )


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: its series ("K" or "kl_weight"), its values and its folder name."""

    series: str
    num_intents: int
    kl_weight: float
    name: str


def grid(ks: Sequence[int], kl_weights: Sequence[float], k0: int, w0: float) -> list[Point]:
    """The K points (weight `w0`), then the KL-weight points (K `k0`). A KL point at `w0` is
    the K point at `k0` (the same run, the same folder)."""
    points = [Point("K", int(k), float(w0), f"K={k}") for k in ks]
    for w in kl_weights:
        name = f"K={k0}" if w == w0 else f"kl={w:g}"
        points.append(Point("kl_weight", int(k0), float(w), name))
    return points


def point_config(config, point: Point, seed: int):
    """The config of one point: its K and KL weight, one EM seed, the LatentCRS plan only."""
    cfg = copy.deepcopy(config)
    cfg.pretrain.num_intents = point.num_intents
    cfg.em.e_kl_weight = point.kl_weight
    cfg.em.m_kl_weight = point.kl_weight
    cfg.em_seeds = (int(seed),)
    cfg.em_plans = (PLAN,)
    return cfg


# ------------------------------------------------------------------------------ point stages
def _link(point_dir: pathlib.Path, target: pathlib.Path) -> None:
    """`point_dir/<target.name>` -> target, as a relative symlink (kept when it is one)."""
    link = point_dir / target.name
    rel = os.path.relpath(target, point_dir)
    if link.is_symlink() and os.readlink(link) == rel:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(rel, target_is_directory=True)


def refit_intents(config, workdir: pathlib.Path, point_dir: pathlib.Path) -> None:
    """`<point_dir>/pretrain`: the workdir's backbone with K-means intents for
    `config.pretrain.num_intents`, skipped when its manifest matches."""
    from latentcrs_jax.training import sharding
    from latentcrs_jax.training.pretrain import config as pretrain_config
    from latentcrs_jax.training.pretrain import data as pretrain_data
    from latentcrs_jax.training.pretrain import stage as pretrain_stage

    base, out = artifacts.pretrain_dir(workdir), artifacts.pretrain_dir(point_dir)
    cfg = pretrain_config.pretrain_config_from(config.pretrain)
    fp = stage_manifest.fingerprint(
        backbone=stage_manifest.content_hash(base),
        kmeans={
            "num_intents": cfg.num_intents,
            "iters": cfg.kmeans_iters,
            "redo": cfg.kmeans_redo,
            "seed": cfg.seed,
        },
    )
    if out.is_symlink():
        out.unlink()
    if stage_manifest.is_complete(out, fp):
        return
    stage_manifest.claim(out, fp, replace=True)
    model_cfg, params, _ = artifacts.load_backbone(base)
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    sequences = ds.sequences()
    data = pretrain_data.build_sequence_data(
        sequences, ds.num_items, model_cfg.max_len, cfg.augment_window
    )
    task = pretrain_stage.make_task(data, model_cfg, cfg, sharding.make_mesh())
    t0 = time.perf_counter()
    pretrain_stage.write_intents(task, params, out, len(sequences))
    logging.info("K-means K=%d on the backbone in %.1fs", cfg.num_intents, time.perf_counter() - t0)
    artifacts.save_backbone(out, model_cfg, params)
    result = json.loads((base / "result.json").read_text())
    result["num_intents"] = cfg.num_intents
    fileio.write_json(out / "result.json", result)
    stage_manifest.write(out, fp, content_hash=fp, result=result)


def _seed_from_workdir(workdir: pathlib.Path, point_dir: pathlib.Path, seed: int) -> None:
    """Copies the workdir's finished LatentCRS phases of `seed` (and its saved test user
    states) into the point's folder where it has none; `em_stage` reuses those whose
    fingerprints match and starts the others over."""
    copies = [(artifacts.user_states_dir(workdir), artifacts.user_states_dir(point_dir))]
    for phase in em.PHASE_PLANS[PLAN]:
        copies.append(
            (
                artifacts.em_phase_dir(workdir, seed, phase.name),
                artifacts.em_phase_dir(point_dir, seed, phase.name),
            )
        )
    for src, dst in copies:
        if stage_manifest.read(src) is not None and not dst.exists():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))


def run_point(config, workdir: pathlib.Path, point: Point, seed: int) -> dict:
    """Trains (or skips, when finished) one point; returns its test metrics."""
    cfg = point_config(config, point, seed)
    point_dir = sensitivity_dir(workdir) / point.name
    point_dir.mkdir(parents=True, exist_ok=True)
    for shared in (prepare_lib.data_dir(workdir), simulate_stage.stage_dir(workdir)):
        if shared.exists():
            _link(point_dir, shared)
    _link(point_dir, encode_stage.stage_dir(workdir))
    k0 = int(config.pretrain.num_intents)
    if point.num_intents == k0:
        _link(point_dir, artifacts.pretrain_dir(workdir))
        if point.kl_weight == float(config.em.m_kl_weight) == float(config.em.e_kl_weight):
            _seed_from_workdir(workdir, point_dir, seed)
    elif config.pretrain.loss == "iclrec":  # the backbone trains against its K intents
        from latentcrs_jax.training.pretrain import stage as pretrain_stage

        if artifacts.pretrain_dir(point_dir).is_symlink():
            artifacts.pretrain_dir(point_dir).unlink()
        logging.info(pretrain_stage.run(cfg, point_dir))
    else:
        refit_intents(cfg, workdir, point_dir)
    em_stage.run(cfg, point_dir)
    final = json.loads(
        (artifacts.em_phase_dir(point_dir, seed, "em") / "final_metrics.json").read_text()
    )
    return {
        "num_intents": point.num_intents,
        "kl_weight": point.kl_weight,
        "dir": point.name,
        **{m: final[f"test/{HEAD}/{m}"] for m in METRICS},
        "backbone": {m: final[f"test/backbone/{m}"] for m in METRICS},
    }


# ------------------------------------------------------------------------------------ sweep
def _prepare_workdir(config, workdir: pathlib.Path, ks, emit, check_endpoints: bool) -> None:
    """Runs (or skips) the shared stages, checking the K grid once the dataset exists."""
    from latentcrs_jax import pipeline, preflight
    from latentcrs_jax.training.pretrain import data as pretrain_data

    if check_endpoints:
        preflight.check_endpoints(config, preflight.stage_names("encode"))
    pipeline.run(config, workdir, emit=emit, until="prepare", check_endpoints=False)
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    check_ks(ks, len(pretrain_data.training_users(ds.sequences())))
    pipeline.run(config, workdir, emit=emit, until="encode", check_endpoints=False)
    pipeline.run(config, workdir, emit=emit, until="pretrain", check_endpoints=False)


def run(
    config,
    workdir: str | pathlib.Path,
    ks: Sequence[int] = DEFAULT_KS,
    kl_weights: Sequence[float] = DEFAULT_KL_WEIGHTS,
    seed: int = 0,
    emit: Callable[[str], None] = logging.info,
    check_endpoints: bool = True,
) -> pathlib.Path:
    """The whole sweep; returns the path of sensitivity.json (written after every point).

    Args:
      config: the workdir's config (its K and KL weight are the values held fixed).
      workdir: the pipeline workdir whose shared stages the points read (run here if missing).
      ks: the K grid (`parse_ks`).
      kl_weights: the KL-weight grid (`parse_kl_weights`).
      seed: the EM seed of every point.
      emit: progress lines.
      check_endpoints: test the simulator's LLM endpoint first (when it has one).
    """
    from latentcrs_jax import report

    if not ks and not kl_weights:
        raise UserInputError("--ks and --kl_weights are both empty: nothing to sweep")
    if seed < 0:
        raise UserInputError(f"--seed must be >= 0, got {seed}")
    workdir = pathlib.Path(workdir)
    _prepare_workdir(config, workdir, ks, emit, check_endpoints)
    k0, w0 = int(config.pretrain.num_intents), float(config.em.m_kl_weight)
    points = grid(ks, kl_weights, k0, w0)
    result = {
        "dataset": config.data.name,
        "seed": int(seed),
        "plan": PLAN,
        "defaults": {"num_intents": k0, "kl_weight": w0},
        "K": [],
        "kl_weight": [],
    }
    done: dict[str, dict] = {}
    out = result_path(workdir)
    for i, point in enumerate(points, 1):
        t0 = time.time()
        label = (
            f"K={point.num_intents}" if point.series == "K" else f"KL weight {point.kl_weight:g}"
        )
        emit(f"sensitivity point {i}/{len(points)}: {label} ({point.name})")
        if point.name not in done:
            done[point.name] = run_point(config, workdir, point, seed)
        metrics = done[point.name]
        result[point.series].append(metrics)
        emit(
            f"sensitivity point {i}/{len(points)}: {label}: test HIT@10 {metrics['hit@10']:.4f}, "
            f"NDCG@10 {metrics['ndcg@10']:.4f} ({time.time() - t0:.0f}s)"
        )
        fileio.write_json(out, result)
        report.plot_sensitivity(result, out.with_suffix(".png"))
    return out


def load(workdir: str | pathlib.Path) -> dict | None:
    """The saved sweep of a workdir, or None when it has none."""
    path = result_path(workdir)
    return json.loads(path.read_text()) if path.is_file() else None
