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
from latentcrs_jax.conversation import multi_turn_stage
from latentcrs_jax.data import prepare as prepare_stage
from latentcrs_jax.evaluation import one_turn
from latentcrs_jax.simulator import stage as simulate_stage
from latentcrs_jax.text import stage as encode_stage
from latentcrs_jax.training import em_stage
from latentcrs_jax.training.pretrain import stage as pretrain_stage


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline stage: `run(config, workdir)` returns a printable summary (or "").

    `needs` names the stages whose outputs it reads; running up to a stage runs those (and
    theirs) first, in pipeline order, and nothing else.
    """

    name: str
    run: Callable[[object, pathlib.Path], str]
    needs: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("prepare", prepare_stage.run),
    Stage("simulate", simulate_stage.run, ("prepare",)),
    Stage("encode", encode_stage.run, ("simulate",)),
    Stage("pretrain", pretrain_stage.run, ("prepare",)),
    Stage("train", em_stage.run, ("encode", "pretrain")),
    Stage("evaluate", one_turn.run, ("train",)),
    Stage("multi_turn", multi_turn_stage.run, ("train",)),
    Stage(
        "report",
        lambda config, workdir: f"report: {report_lib.build(config, workdir)}",
        ("evaluate", "multi_turn"),
    ),
)


def stages_until(until: str | None) -> tuple[Stage, ...]:
    """The stages a run up to `until` executes: `until` and what it needs, transitively, in
    pipeline order (every stage when None)."""
    names = [s.name for s in STAGES]
    if until is None:
        return STAGES
    if until not in names:
        raise ValueError(f"unknown stage {until!r}; stages are {names}")
    by_name = {s.name: s for s in STAGES}
    wanted, todo = set(), [until]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs)
    return tuple(s for s in STAGES if s.name in wanted)


def run(
    config,
    workdir: str | pathlib.Path,
    emit: Callable[[str], None] = logging.info,
    until: str | None = None,
    check_endpoints: bool = True,
) -> None:
    """Runs `stages_until(until)` in order; finished ones skip themselves.

    `check_endpoints=False` skips the endpoints' test requests (a caller that sent them).
    """
    stages = stages_until(until)
    # Bad fields, batch sizes the devices cannot share, unreachable endpoints: fail now, not
    # after training.
    preflight.check(config, [s.name for s in stages], endpoints=check_endpoints)
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
