"""The pretrain stage of the pipeline: backbone + K intents into `<workdir>/pretrain`.

Fingerprinted by the dataset's content hash and the `backbone` and `pretrain` config sections
less the fields that only trade speed for memory (`SPEED_ONLY`: the same model either way), so
tuning them never makes a finished backbone "another config"; a finished stage is skipped, an
interrupted one resumes from its checkpoints, under the config that started it only.
"""

import json
import pathlib

import jax
from absl import logging

from latentcrs_jax import stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.training import pretrain

# Pretrain fields that change speed, memory or logging, not the trained model (up to float
# rounding; `microbatch` also changes which dropout masks are drawn, not their distribution).
SPEED_ONLY = (
    "eval_batch_size",
    "eval_item_chunk",
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


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir) / "pretrain"


def _fingerprint(config, workdir) -> str:
    manifest = dataset_lib.read_manifest(prepare_lib.data_dir(workdir))
    section = stage_manifest.section(config.pretrain, skip=SPEED_ONLY, neutral=NEUTRAL)
    backbone = stage_manifest.section(config.backbone, neutral=BACKBONE_NEUTRAL)
    return stage_manifest.fingerprint(
        data=manifest["content_hash"], backbone=backbone, pretrain=section
    )


def _claim(out: pathlib.Path, fp: str) -> None:
    """Records which config an unfinished run belongs to, and refuses to resume one of another
    config (its checkpoints would silently continue under the new settings). Runs started
    before this record existed are claimed by the config that resumes them."""
    started = stage_manifest.read_started(out)
    if started is not None and started != fp:
        raise UserInputError(
            f"{out} holds an unfinished run of another config; use another --workdir "
            "(or delete it to start over)"
        )
    if started is None and jax.process_index() == 0:
        stage_manifest.mark_started(out, fp)


def run(config, workdir: str | pathlib.Path) -> str:
    """Pretrains unless already done; returns the backbone's test metrics in one line."""
    out = stage_dir(workdir)
    fp = _fingerprint(config, workdir)
    if stage_manifest.is_complete(out, fp):
        logging.info("pretrain: %s is complete; skipping", out)
        result = json.loads((out / "result.json").read_text())
    else:
        if stage_manifest.read(out) is not None:
            raise UserInputError(
                f"{out} holds a backbone trained with another config; use another --workdir"
            )
        _claim(out, fp)
        result = pretrain.train_and_evaluate(config, workdir)
        stage_manifest.write(out, fp, result=result)
    metrics = ", ".join(f"{k} {result[k]:.4f}" for k in SUMMARY_KEYS if k in result)
    return (
        f"backbone ({result.get('loss')}, best epoch {result.get('best_epoch')}, "
        f"{result.get('num_intents')} intents): {metrics}"
    )
