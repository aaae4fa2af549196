"""The pretrain stage: backbone + K intents into `<workdir>/pretrain`.

`train` runs a backbone task (`make_task` picks the loss family's) under `loop.Trainer` and
writes its artefacts: checkpoints/, metrics.jsonl, final_metrics.json, backbone.msgpack +
backbone_config.json (the best parameters, `artifacts.save_backbone`), centroids.npy [K, D]
(raw), intents.npy [K, D] (L2-normalised: the intent vectors), assignments.npy int32[U]
(cluster of each user's training sequence, -1 if none) and result.json (written last).

`run(config, workdir)` is the pipeline stage. Fingerprinted by the dataset's content hash and
the `backbone` and `pretrain` config sections less the fields that only trade speed for memory
(`SPEED_ONLY`: the same model either way), so tuning them never makes a finished backbone
"another config"; a finished stage is skipped, an interrupted one resumes from its checkpoints,
under the config that started it only (`stage_manifest.claim`).
"""

import json
import pathlib
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging

from latentcrs_jax import artifacts, fileio, stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.models import sasrec
from latentcrs_jax.training import kmeans, loop, sharding
from latentcrs_jax.training.pretrain.bce import BCETask
from latentcrs_jax.training.pretrain.ce import CETask
from latentcrs_jax.training.pretrain.ce_intent import CEIntentTask
from latentcrs_jax.training.pretrain.config import (
    PretrainConfig,
    model_config_from,
    pretrain_config_from,
)
from latentcrs_jax.training.pretrain.data import SequenceData, build_sequence_data
from latentcrs_jax.training.pretrain.iclrec import ICLRecTask
from latentcrs_jax.training.pretrain.task import PretrainTask

TASKS: dict[str, type[PretrainTask]] = {
    "iclrec": ICLRecTask,
    "ce": CETask,
    "bce": BCETask,
    "ce_intent": CEIntentTask,
}

# Pretrain fields that change speed, memory or logging, not the trained model (up to float
# rounding; `microbatch` also changes which dropout masks are drawn, not their distribution).
SPEED_ONLY = (
    "eval_batch_size",
    "eval_item_chunk",
    "checkpoint_interval_s",
    "ce_chunk",
    "remat",
    "query_blocks",
    "microbatch",
    "eval_splits",
)
# Fields added after the first release, with the value that trains as before they existed.
NEUTRAL = {"lr_decay_epochs": (), "lr_decay_factor": 0.1}
BACKBONE_NEUTRAL = {"block": "post_ln", "positions": "from_end"}
SUMMARY_KEYS = ("test/hit@10", "test/ndcg@10", "test/hit@20", "test/ndcg@20")


def make_task(
    data: SequenceData, model_cfg: sasrec.SASRecConfig, cfg: PretrainConfig, mesh
) -> PretrainTask:
    """The task of `cfg.loss`'s family."""
    return TASKS[cfg.loss](data, model_cfg, cfg, mesh)


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return artifacts.pretrain_dir(workdir)


def _fingerprint(config, workdir) -> str:
    manifest = dataset_lib.read_manifest(prepare_lib.data_dir(workdir))
    section = stage_manifest.section(config.pretrain, skip=SPEED_ONLY, neutral=NEUTRAL)
    backbone = stage_manifest.section(config.backbone, neutral=BACKBONE_NEUTRAL)
    return stage_manifest.fingerprint(
        data=manifest["content_hash"], backbone=backbone, pretrain=section
    )


def train(
    sequences: Sequence[np.ndarray],
    num_items: int,
    model_cfg: sasrec.SASRecConfig,
    cfg: PretrainConfig,
    stage_dir: str | pathlib.Path,
    mesh=None,
) -> dict:
    """Trains the backbone (resuming if possible) and writes its artefacts.

    Args:
      sequences: U int arrays, each user's items in time order.
      num_items: N.
      model_cfg: SASRec settings.
      cfg: training settings.
      stage_dir: output directory (`<workdir>/pretrain`).
      mesh: data mesh; default all devices.

    Returns:
      The result dict also written to result.json.
    """
    stage_dir = pathlib.Path(stage_dir)
    mesh = mesh if mesh is not None else sharding.make_mesh()
    data = build_sequence_data(sequences, num_items, model_cfg.max_len, cfg.augment_window)
    task = make_task(data, model_cfg, cfg, mesh)
    trainer = loop.Trainer(
        loop.TrainerConfig(
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            early_stop_metric=cfg.early_stop_metric,
            eval_splits=cfg.eval_splits,
            seed=cfg.seed,
            checkpoint_interval_s=cfg.checkpoint_interval_s,
        ),
        stage_dir,
        mesh,
    )
    fit = trainer.fit(task)
    best = fit.best_state
    centroids = None
    if task.clusters_each_epoch and cfg.faithful_centroid_timing:
        centroids = np.asarray(jax.device_get(best.extras["centroids"]))  # start of best epoch
    artifacts.save_backbone(stage_dir, model_cfg, jax.device_get(best.params))
    centroids = write_intents(task, best.params, stage_dir, len(sequences), centroids)
    result = {
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "train_seconds_this_process": fit.train_seconds,
        "train_seconds_total": fit.total_seconds,  # over every resume
        "train_seconds_to_best_epoch": fit.seconds_to_best,
        "loss": cfg.loss,
        "num_intents": int(centroids.shape[0]),
        **fit.final_metrics,
    }
    fileio.write_json(stage_dir / "result.json", result)
    return result


def write_intents(
    task: PretrainTask, params, stage_dir: pathlib.Path, num_users: int, centroids=None
) -> np.ndarray:
    """Writes centroids.npy [K, D], intents.npy [K, D] and assignments.npy int32[U] of a
    backbone; returns the centroids.

    Args:
      task: the backbone task (its data and `cfg.num_intents`, K-means settings).
      params: the backbone's variables.
      stage_dir: output directory.
      num_users: U (users without a training sequence are assigned -1).
      centroids: float[K, D] to write as they are; None: K-means on `params` (`fit_clusters`).
    """
    if centroids is None:
        centroids = task.fit_clusters(params).centroids  # from the best weights
    emb = task.sequence_embeddings(params)
    assignments = np.full(num_users, -1, np.int32)
    assignments[task.data.train_users] = np.asarray(kmeans.assign(emb, centroids))
    fileio.write_npy(stage_dir / "centroids.npy", centroids)
    fileio.write_npy(stage_dir / "intents.npy", kmeans.intent_matrix(centroids))
    fileio.write_npy(stage_dir / "assignments.npy", assignments)
    return centroids


def train_and_evaluate(config, workdir: str | pathlib.Path) -> dict:
    """The pretrain stage on `<workdir>/data` (see launch/pretrain.py)."""
    workdir = pathlib.Path(workdir)
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    model_cfg = model_config_from(config.backbone, ds.num_items)
    cfg = pretrain_config_from(config.pretrain)
    logging.info("pretrain %s: %d users, %d items, %s", ds.name, ds.num_users, ds.num_items, cfg)
    return train(ds.sequences(), ds.num_items, model_cfg, cfg, stage_dir(workdir))


def run(config, workdir: str | pathlib.Path) -> str:
    """Pretrains unless already done; returns the backbone's test metrics in one line."""
    out = stage_dir(workdir)
    fp = _fingerprint(config, workdir)
    if stage_manifest.is_complete(out, fp):
        logging.info("pretrain: %s is complete; skipping", out)
        result = json.loads((out / "result.json").read_text())
    else:
        # The backbone is a root: another config's is never replaced (stage_manifest's policy).
        stage_manifest.claim(out, fp, replace=False, writer=jax.process_index() == 0)
        result = train_and_evaluate(config, workdir)
        stage_manifest.write(out, fp, result=result)
    metrics = ", ".join(f"{k} {result[k]:.4f}" for k in SUMMARY_KEYS if k in result)
    return (
        f"backbone ({result.get('loss')}, best epoch {result.get('best_epoch')}, "
        f"{result.get('num_intents')} intents): {metrics}"
    )
