"""The train stage: the EM stages (and baselines, ablations) for every seed of the config.

Reads `<workdir>/data`, `<workdir>/embeddings` and `<workdir>/pretrain`, computes the frozen
user states once, then runs each plan of `config.em_plans` for each seed of `config.em_seeds`
into `<workdir>/em/seed<k>/<stage>/` (checkpoints, metrics.jsonl, final_metrics.json,
best_params.msgpack). A finished stage (manifest) is skipped; an interrupted one resumes from
its checkpoints. Stages of one seed share the "posterior" stage.
"""

import dataclasses
import functools
import json
import pathlib
import shutil
import time

import flax.serialization
import jax
import numpy as np
from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.text import stage as encode_stage
from latentcrs_jax.training import distributed, em, em_data, loop, pretrain, sharding


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir) / "em"


@dataclasses.dataclass
class EMInputs:
    """Everything the EM tasks read, loaded once per process."""

    splits: dict[str, em_data.SplitArrays]
    item_emb: np.ndarray
    intents: np.ndarray
    backbone: tuple
    upstream: str
    item_text: np.ndarray | None = None  # float32[N+1, D_x], when the encode stage has it

    def get(self) -> "EMInputs":
        """Itself (the interface of `LazyEMInputs`)."""
        return self


def load_inputs(
    config, workdir: str | pathlib.Path, *, faithful_positions: bool, splits=None
) -> EMInputs:
    """Loads the dataset, embeddings and backbone; computes the frozen user states of the
    splits named in `splits` (all when None)."""
    workdir = pathlib.Path(workdir)
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    model_cfg, params, intents = pretrain.load_backbone(workdir / "pretrain")
    t0 = time.perf_counter()
    arrays = {}
    for name, s in ds.splits.items():
        if splits is not None and name not in splits:
            continue
        h = em_data.user_states(
            model_cfg, params, s.history, pretrain_positions=not faithful_positions
        )
        arrays[name] = em_data.SplitArrays(
            h=h,
            x=encode_stage.load(workdir, name),
            history=s.history,
            target=s.target,
            candidates=np.concatenate([s.target[:, None], s.negatives], axis=1),
            user=s.user,
        )
    logging.info("frozen user states in %.1fs", time.perf_counter() - t0)
    item_emb = np.asarray(params["params"]["item_embed"]["embedding"])
    try:
        item_text = encode_stage.load(workdir, "items")
    except FileNotFoundError:
        item_text = None
    return EMInputs(
        arrays, item_emb, intents, (model_cfg, params), upstream_fingerprint(workdir), item_text
    )


def upstream_fingerprint(workdir: str | pathlib.Path) -> str:
    """What the EM stages read from earlier stages (embeddings, backbone), as one hash."""
    workdir = pathlib.Path(workdir)
    return stage_manifest.fingerprint(
        embeddings=stage_manifest.content_hash(encode_stage.stage_dir(workdir)),
        pretrain=stage_manifest.content_hash(workdir / "pretrain"),
    )


class LazyEMInputs:
    """The upstream fingerprint now, `load_inputs` on first `get()`: a run whose stages are
    all finished never computes the frozen user states."""

    def __init__(self, config, workdir: str | pathlib.Path, *, faithful_positions: bool):
        self.upstream = upstream_fingerprint(workdir)
        self._load = functools.partial(
            load_inputs, config, workdir, faithful_positions=faithful_positions
        )
        self._inputs: EMInputs | None = None

    def get(self) -> EMInputs:
        if self._inputs is None:
            self._inputs = self._load()
        return self._inputs


def save_params(path: pathlib.Path, params) -> None:
    with fileio.atomic_path(path) as tmp:
        tmp.write_bytes(flax.serialization.msgpack_serialize(jax.device_get(params)))


def load_params(path: pathlib.Path):
    return flax.serialization.msgpack_restore(path.read_bytes())


def run_stage(
    cfg: em.EMConfig,
    stage: em.EMStage,
    inputs: "EMInputs | LazyEMInputs",
    out: pathlib.Path,
    init_params,
    mesh,
) -> dict:
    """Runs (or skips, when finished) one EM stage; returns its `final_metrics.json`."""
    # The prior's extensions play no part in the posterior-only stage: its runs are shared.
    posterior_only = stage.phases == ("E",) and dict(stage.overrides).get("e_kl_weight") == 0.0
    skip = tuple(em.EM_NEUTRAL) if posterior_only else ()
    em_section = stage_manifest.section(dataclasses.asdict(cfg), skip=skip, neutral=em.EM_NEUTRAL)
    fp = stage_manifest.fingerprint(
        upstream=inputs.upstream, em=em_section, stage=dataclasses.asdict(stage)
    )
    if stage_manifest.is_complete(out, fp):
        logging.info("EM stage %s is complete; skipping", out)
        return json.loads((out / "final_metrics.json").read_text())
    if jax.process_index() == 0 and stage_manifest.read_started(out) != fp:
        if out.exists():
            # Checkpoints of another config must not be resumed: this stage starts over.
            logging.warning("EM stage %s was made with another config; starting it over", out)
            shutil.rmtree(out)
        stage_manifest.mark_started(out, fp)
    # Only process 0 touches the directory; the others wait for it (before, a second process
    # could see the directory before its started.json and delete it under process 0).
    distributed.barrier(f"claimed {out}")
    inputs = inputs.get()
    task = em.EMTask(
        cfg,
        stage,
        inputs.splits,
        inputs.item_emb,
        inputs.intents,
        inputs.backbone,
        mesh,
        init_params,
        item_text=inputs.item_text,
    )
    trainer = loop.Trainer(
        loop.TrainerConfig(
            max_epochs=task.cfg.max_epochs,
            patience=task.cfg.patience,
            early_stop_metric=f"valid/{stage.stop_head}/ndcg@10",
            seed=cfg.seed,
        ),
        out,
        mesh,
    )
    fit = trainer.fit(task)
    if jax.process_index() == 0:
        save_params(out / "best_params.msgpack", fit.best_state.params)
        stage_manifest.write(out, fp, best_epoch=fit.best_epoch, epochs_run=fit.epochs_run)
    return {"best_epoch": fit.best_epoch, "epochs_run": fit.epochs_run, **fit.final_metrics}


def run(config, workdir: str | pathlib.Path) -> str:
    """Every plan for every seed; returns a short summary of the test NDCG@10 per head."""
    base = em.EMConfig.from_config(config.em)
    inputs = LazyEMInputs(config, workdir, faithful_positions=base.faithful_backbone)
    mesh = sharding.make_mesh()
    lines = []
    for seed in config.em_seeds:
        seed_dir = stage_dir(workdir) / f"seed{seed}"
        cfg = dataclasses.replace(base, seed=int(seed))
        done: dict[str, pathlib.Path] = {}
        plans = [em.STAGE_PLANS[name] for name in config.em_plans]
        posterior = em.main_plan()[0]
        for plan in plans:
            for stage in plan:
                if stage.init_from == "posterior" and "posterior" not in done:
                    run_stage(cfg, posterior, inputs, seed_dir / "posterior", None, mesh)
                    done["posterior"] = seed_dir / "posterior"
                if stage.name in done:
                    continue
                init = None
                if stage.init_from:
                    init = load_params(done[stage.init_from] / "best_params.msgpack")
                final = run_stage(cfg, stage, inputs, seed_dir / stage.name, init, mesh)
                done[stage.name] = seed_dir / stage.name
                lines.append(
                    f"seed {seed} {stage.name}: test NDCG@10 "
                    + ", ".join(
                        f"{h} {final.get(f'test/{h}/ndcg@10', float('nan')):.4f}" for h in em.HEADS
                    )
                )
    return "\n".join(lines)
