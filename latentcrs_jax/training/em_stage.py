"""The train stage: the EM phases (and baselines, ablations) for every seed of the config.

Reads `<workdir>/data`, `<workdir>/embeddings` and `<workdir>/pretrain`, computes the frozen
user states once (saving the test split's, `artifacts.save_user_states`), then runs each
plan of `config.em_plans` for each seed of `config.em_seeds` into
`<workdir>/em/seed<k>/<phase>/` (checkpoints, metrics.jsonl, final_metrics.json,
best_params.msgpack). A finished phase (manifest) is skipped; an interrupted one resumes from
its checkpoints. The plans of one seed share the "posterior" phase.
"""

import dataclasses
import functools
import json
import pathlib
import time

import jax
import numpy as np
from absl import logging

from latentcrs_jax import artifacts, stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.text import stage as encode_stage
from latentcrs_jax.training import distributed, em, em_data, loop, sharding


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return artifacts.em_dir(workdir)


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
    model_cfg, params, intents = artifacts.load_backbone(artifacts.pretrain_dir(workdir))
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
    upstream = upstream_fingerprint(workdir)
    if "test" in arrays and jax.process_index() == 0:
        fp = user_states_fingerprint(upstream, faithful_positions)
        artifacts.save_user_states(workdir, "test", arrays["test"].h, fp)
    item_emb = np.asarray(params["params"]["item_embed"]["embedding"])
    try:
        item_text = encode_stage.load(workdir, "items")
    except FileNotFoundError:
        item_text = None
    return EMInputs(arrays, item_emb, intents, (model_cfg, params), upstream, item_text)


def upstream_fingerprint(workdir: str | pathlib.Path) -> str:
    """What the EM phases read from earlier stages (embeddings, backbone), as one hash."""
    workdir = pathlib.Path(workdir)
    return stage_manifest.fingerprint(
        embeddings=stage_manifest.content_hash(encode_stage.stage_dir(workdir)),
        pretrain=stage_manifest.content_hash(artifacts.pretrain_dir(workdir)),
    )


def user_states_fingerprint(upstream: str, faithful_positions: bool) -> str:
    """What the saved frozen user states were computed from."""
    return stage_manifest.fingerprint(upstream=upstream, faithful_positions=faithful_positions)


class LazyEMInputs:
    """The upstream fingerprint now, `load_inputs` on first `get()`: a run whose phases are
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


def _hashed(phase: em.EMPhase) -> dict:
    """The phase as fingerprinted (under the names hashed since the first release, so that
    finished phases stay complete)."""
    fields = dataclasses.asdict(phase)
    fields["phases"] = fields.pop("passes")
    return fields


def run_phase(
    cfg: em.EMConfig,
    phase: em.EMPhase,
    inputs: "EMInputs | LazyEMInputs",
    out: pathlib.Path,
    init_params,
    mesh,
) -> dict:
    """Runs (or skips, when finished) one EM phase; returns its `final_metrics.json`."""
    # The prior's extensions play no part in the posterior-only phase: its runs are shared.
    posterior_only = phase.passes == ("E",) and dict(phase.overrides).get("e_kl_weight") == 0.0
    skip = em.EM_SPEED_ONLY + (tuple(em.EM_NEUTRAL) if posterior_only else ())
    em_section = stage_manifest.section(dataclasses.asdict(cfg), skip=skip, neutral=em.EM_NEUTRAL)
    fp = stage_manifest.fingerprint(upstream=inputs.upstream, em=em_section, stage=_hashed(phase))
    if stage_manifest.is_complete(out, fp):
        logging.info("EM phase %s is complete; skipping", out)
        return json.loads((out / "final_metrics.json").read_text())
    # Checkpoints of another config must not be resumed: this phase starts over.
    stage_manifest.claim(out, fp, replace=True, writer=jax.process_index() == 0)
    # Only process 0 touches the directory; the others wait for it (before, a second process
    # could see the directory before its started.json and delete it under process 0).
    distributed.barrier(f"claimed {out}")
    inputs = inputs.get()
    task = em.EMTask(
        cfg,
        phase,
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
            early_stop_metric=f"valid/{phase.stop_head}/ndcg@10",
            seed=cfg.seed,
            checkpoint_interval_s=cfg.checkpoint_interval_s,
        ),
        out,
        mesh,
    )
    fit = trainer.fit(task)
    if jax.process_index() == 0:
        artifacts.save_params(out / artifacts.BEST_PARAMS, fit.best_state.params)
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
        plans = [em.PHASE_PLANS[name] for name in config.em_plans]
        posterior = em.main_plan()[0]
        for plan in plans:
            for phase in plan:
                if phase.init_from == "posterior" and "posterior" not in done:
                    run_phase(cfg, posterior, inputs, seed_dir / "posterior", None, mesh)
                    done["posterior"] = seed_dir / "posterior"
                if phase.name in done:
                    continue
                init = None
                if phase.init_from:
                    init = artifacts.load_params(done[phase.init_from] / artifacts.BEST_PARAMS)
                final = run_phase(cfg, phase, inputs, seed_dir / phase.name, init, mesh)
                done[phase.name] = seed_dir / phase.name
                lines.append(
                    f"seed {seed} {phase.name}: test NDCG@10 "
                    + ", ".join(
                        f"{h} {final.get(f'test/{h}/ndcg@10', float('nan')):.4f}" for h in em.HEADS
                    )
                )
    fp = user_states_fingerprint(inputs.upstream, base.faithful_backbone)
    if artifacts.load_user_states(workdir, "test", fp) is None:
        # Phases that finished before the states were saved (or of another upstream).
        load_inputs(config, workdir, faithful_positions=base.faithful_backbone, splits=("test",))
    return "\n".join(lines)
