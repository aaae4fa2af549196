"""The main job: every stage for one config into one workdir, skipping finished stages.

A stage is complete when its outputs exist and were made with the current config (each stage
checks its own manifest). Stages only read what earlier stages wrote into the workdir.
Stages are added here as they land; `run` reports which stage runs and the overall progress.
"""

import dataclasses
import pathlib
import time
from collections.abc import Callable

from absl import logging

from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.data import stats as stats_lib
from latentcrs_jax.simulator import stage as simulate_stage


@dataclasses.dataclass(frozen=True)
class Stage:
    """One pipeline stage: `run(config, workdir)` returns a printable summary (or "")."""

    name: str
    run: Callable[[object, pathlib.Path], str]


def _prepare(config, workdir: pathlib.Path) -> str:
    ds = prepare_lib.prepare(config.data, workdir)
    return stats_lib.format_table(ds.stats, ds.name)


STAGES: tuple[Stage, ...] = (
    Stage("prepare", _prepare),
    Stage("simulate", simulate_stage.run),
)


def run(config, workdir: str | pathlib.Path, emit: Callable[[str], None] = logging.info) -> None:
    """Runs every stage in order; each one skips itself when its outputs are complete."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for k, stage in enumerate(STAGES, 1):
        emit(f"[{k}/{len(STAGES)}] {stage.name} (elapsed {time.time() - start:.0f}s)")
        summary = stage.run(config, workdir)
        if summary:
            emit(summary)
    emit(f"done in {time.time() - start:.0f}s; outputs in {workdir}")
