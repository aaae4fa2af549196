"""The main job: every stage for one config into one workdir, skipping finished stages.

A stage is complete when its outputs exist and were made with the current config (each stage
checks its own manifest). The one-turn table and the report are re-derived from saved
metrics on every run (seconds, identical output). Stages only read what earlier stages wrote
into the workdir.
Each stage module exposes `run(config, workdir) -> summary`.
"""

import dataclasses
import pathlib
import time
from collections.abc import Callable

import jax
from absl import logging

from latentcrs_jax import preflight, workdir_config
from latentcrs_jax import report as report_lib
from latentcrs_jax.conversation import multi_turn
from latentcrs_jax.data import prepare as prepare_stage
from latentcrs_jax.evaluation import one_turn
from latentcrs_jax.simulator import stage as simulate_stage
from latentcrs_jax.text import stage as encode_stage
from latentcrs_jax.training import em_stage, pretrain_stage


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline stage: `run(config, workdir)` returns a printable summary (or "")."""

    name: str
    run: Callable[[object, pathlib.Path], str]


STAGES: tuple[Stage, ...] = (
    Stage("prepare", prepare_stage.run),
    Stage("simulate", simulate_stage.run),
    Stage("encode", encode_stage.run),
    Stage("pretrain", pretrain_stage.run),
    Stage("train", em_stage.run),
    Stage("evaluate", one_turn.run),
    Stage("multi_turn", multi_turn.run),
    Stage("report", lambda config, workdir: f"report: {report_lib.build(config, workdir)}"),
)


def run(
    config,
    workdir: str | pathlib.Path,
    emit: Callable[[str], None] = logging.info,
    until: str | None = None,
    check_endpoints: bool = True,
) -> None:
    """Runs the stages in order (up to and including `until`); finished ones skip themselves.

    `check_endpoints=False` skips the endpoints' test requests (a caller that sent them).
    """
    names = preflight.stage_names(until)
    stages = STAGES[: len(names)]
    # Bad fields, batch sizes the devices cannot share, unreachable endpoints: fail now, not
    # after training.
    preflight.check(config, names, endpoints=check_endpoints)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        workdir_config.record(config, workdir)  # What chat, evaluate and report read by default.
    start = time.time()
    for k, stage in enumerate(stages, 1):
        emit(f"[{k}/{len(stages)}] {stage.name} (elapsed {time.time() - start:.0f}s)")
        summary = stage.run(config, workdir)
        if summary:
            emit(summary)
    emit(f"done in {time.time() - start:.0f}s; outputs in {workdir}")
