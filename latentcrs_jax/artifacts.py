"""Loading and saving what the training stages hand to the rest of the pipeline.

One place for the workdir's trained artefacts, so that evaluation, chat and the report read
them without importing training code:
* the backbone: `<workdir>/pretrain/backbone_config.json` + `backbone.msgpack` (the best
  parameters) and `intents.npy` [K, D] (the L2-normalised intent vectors);
* the EM phases' parameters: `<workdir>/em/seed<k>/<phase>/best_params.msgpack`;
* the frozen user states h_u of the test split: `<workdir>/em/user_states/test.npy`
  [S, D], written by the train stage when it computes them (the report's intent figures read
  them instead of running the backbone again), with the fingerprint of what they were
  computed from in the folder's manifest.
"""

import dataclasses
import functools
import json
import pathlib

import flax.serialization
import jax
import numpy as np

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.models import sasrec

PRETRAIN_DIR = "pretrain"
EM_DIR = "em"
BEST_PARAMS = "best_params.msgpack"


def pretrain_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """`<workdir>/pretrain`: the backbone, its intents and its training run."""
    return pathlib.Path(workdir) / PRETRAIN_DIR


def em_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """`<workdir>/em`: one folder per EM seed, one per EM phase inside it."""
    return pathlib.Path(workdir) / EM_DIR


def em_phase_dir(workdir: str | pathlib.Path, seed: int, phase: str) -> pathlib.Path:
    """`<workdir>/em/seed<seed>/<phase>`."""
    return em_dir(workdir) / f"seed{seed}" / phase


# -- backbone ---------------------------------------------------------------------------------


def save_backbone(stage_dir: str | pathlib.Path, model_cfg: sasrec.SASRecConfig, params) -> None:
    """Writes backbone_config.json and backbone.msgpack atomically."""
    stage_dir = pathlib.Path(stage_dir)
    fileio.write_json(stage_dir / "backbone_config.json", dataclasses.asdict(model_cfg))
    with fileio.atomic_path(stage_dir / "backbone.msgpack") as tmp:
        tmp.write_bytes(flax.serialization.to_bytes(params))


def load_backbone(stage_dir: str | pathlib.Path) -> tuple[sasrec.SASRecConfig, dict, np.ndarray]:
    """Loads (SASRecConfig, params, intents float32[K, D]) of a finished pretrain stage."""
    stage_dir = pathlib.Path(stage_dir)
    if not (stage_dir / "result.json").is_file():
        raise FileNotFoundError(f"no finished pretraining in {stage_dir}; run launch/pretrain.py")
    model_cfg = sasrec.SASRecConfig(**json.loads((stage_dir / "backbone_config.json").read_text()))
    target = jax.eval_shape(functools.partial(sasrec.init_params, model_cfg), jax.random.PRNGKey(0))
    params = flax.serialization.from_bytes(target, (stage_dir / "backbone.msgpack").read_bytes())
    return model_cfg, params, np.load(stage_dir / "intents.npy")


def load_intents(stage_dir: str | pathlib.Path) -> np.ndarray:
    """The intent vectors float32[K, D] of a finished pretrain stage (no parameters read)."""
    stage_dir = pathlib.Path(stage_dir)
    if not (stage_dir / "result.json").is_file():
        raise FileNotFoundError(f"no finished pretraining in {stage_dir}; run launch/pretrain.py")
    return np.load(stage_dir / "intents.npy")


# -- EM parameters ----------------------------------------------------------------------------


def save_params(path: str | pathlib.Path, params) -> None:
    """Writes a parameter tree as msgpack atomically (EM phases' `best_params.msgpack`)."""
    with fileio.atomic_path(path) as tmp:
        tmp.write_bytes(flax.serialization.msgpack_serialize(jax.device_get(params)))


def load_params(path: str | pathlib.Path):
    """A parameter tree written by `save_params` (nested dicts of numpy arrays)."""
    return flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())


# -- frozen user states -----------------------------------------------------------------------


def user_states_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """`<workdir>/em/user_states`."""
    return em_dir(workdir) / "user_states"


def save_user_states(workdir: str | pathlib.Path, split: str, states, fp: str) -> None:
    """Writes a split's frozen user states float32[S, D] and marks them as made from `fp`."""
    out = user_states_dir(workdir)
    fileio.write_npy(out / f"{split}.npy", np.asarray(states, np.float32))
    stage_manifest.write(out, fp, split=split)


def load_user_states(
    workdir: str | pathlib.Path, split: str, fp: str | None = None
) -> np.ndarray | None:
    """A split's saved frozen user states float32[S, D]; None when none were saved (or, with
    `fp`, when they were made from anything else)."""
    out = user_states_dir(workdir)
    manifest = stage_manifest.read(out)
    if manifest is None or manifest.get("split") != split:
        return None
    if fp is not None and manifest["fingerprint"] != fp:
        return None
    return np.load(out / f"{split}.npy")
