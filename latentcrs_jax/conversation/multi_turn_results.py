"""The multi-turn results: every configured system through the protocol, its SR@r, AT and
token costs (`evaluate`), the table, and the files under `<workdir>/eval/` (`write_outputs`:
`multi_turn.json`, `multi_turn.md`, `transcripts/<system>.jsonl`)."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.conversation import costs as costs_lib
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import llm_tracker
from latentcrs_jax.conversation import transcripts as transcripts_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.multi_turn import (
    LLM_ONLY,
    SYSTEM_SPECS,
    MultiTurnSettings,
    SystemSpec,
)
from latentcrs_jax.conversation.multi_turn_protocol import (
    run_dialogues,
    success_metrics,
    to_transcripts,
)
from latentcrs_jax.simulator.state import Utterance
from latentcrs_jax.simulator.tokens import TokenUsage


def to_markdown(results: Mapping[str, Mapping[str, Any]], rounds: int) -> str:
    """The table: one row per system, SR@1..SR@R and AT."""
    head = [f"SR@{r}" for r in range(1, rounds + 1)] + ["AT"]
    lines = ["| system | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in results.values():
        cells = [f"{v:.4f}" for v in row["success_rate"]] + [f"{row['average_turns']:.3f}"]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def evaluate(
    recommenders: Mapping[str, Any],
    histories: np.ndarray,
    targets: np.ndarray,
    keys: Sequence[str],
    first_utterances: Sequence[Utterance],
    simulator: Any,
    items: Sequence[Mapping[str, Any]],
    domain: str,
    settings: MultiTurnSettings,
    prefetch: Callable[[Sequence[str]], None] | None = None,
    tracker: llm_tracker.LLMStateTracker | None = None,
    validator: Any = None,
    llm_recommender: llm_rec_lib.LLMRecommender | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[transcripts_lib.Transcript]]]:
    """Runs every configured system whose parts exist; returns (results, transcripts).

    `results[name]` is `success_metrics(...)` plus "label", "recommender", "hard_filter" and
    "cost" (`costs.system_costs`: the tokens of its dialogues by role). Systems whose
    recommender is missing (e.g. no fusion run), ^V without a `validator` and the LLM-only
    baseline without an `llm_recommender` (no endpoint) are skipped with a log line. With an
    LLM `tracker`, its vocabulary is the filter's (build it from `items`, `domain`).
    """
    specs = []
    for name in settings.systems:
        spec = SYSTEM_SPECS[name]
        if spec.recommender == LLM_ONLY and llm_recommender is None:
            logging.info(
                "multi-turn: no LLM endpoint (multi_turn.llm_base_url, llm_model); skipping %s",
                name,
            )
        elif spec.validate and validator is None:
            logging.warning("multi-turn: no validator; skipping %s", name)
        elif spec.recommender == LLM_ONLY or spec.recommender in recommenders:
            specs.append(spec)
        else:
            logging.warning("multi-turn: no %r recommender; skipping %s", spec.recommender, name)
    vocab = tracker.vocab if tracker is not None else FeatureVocab(items, domain)
    labels = {s.name: _label(s, validator, llm_recommender) for s in specs}
    dialogues = run_dialogues(
        recommenders,
        specs,
        histories,
        targets,
        keys,
        first_utterances,
        simulator,
        items,
        vocab,
        settings,
        prefetch,
        tracker,
        validator,
        llm_recommender,
    )
    results = {}
    for spec in specs:
        rows = dialogues[spec.name]
        metrics = success_metrics([d.success_round for d in rows], settings.rounds)
        usage = {
            role: sum((d.usage.get(role, TokenUsage()) for d in rows), TokenUsage())
            for role in costs_lib.ROLES
        }
        turns = sum(d.success_round or settings.rounds for d in rows)
        results[spec.name] = {
            "label": labels[spec.name],
            "recommender": spec.recommender,
            "hard_filter": spec.hard_filter,
            **metrics,
            "cost": costs_lib.system_costs(
                usage, _parts(spec, simulator, tracker, validator), len(rows), turns
            ),
        }
    return results, to_transcripts(specs, dialogues, keys, targets, items, labels)


def _label(spec: SystemSpec, validator: Any, llm_recommender: Any) -> str:
    if spec.validate:
        return f"{spec.label}, {validator.label}"
    if spec.recommender == LLM_ONLY:
        return f"{spec.label}, {llm_recommender.client.config.model}"
    return spec.label


def _parts(spec: SystemSpec, simulator: Any, tracker: Any, validator: Any) -> dict[str, str]:
    """Which parts of a system call an LLM (costs.LLM), run without one, or do not exist."""
    llm, keyless, absent = costs_lib.LLM, costs_lib.KEYLESS, costs_lib.ABSENT
    return {
        "simulator": llm if getattr(simulator, "client", None) is not None else keyless,
        "tracker": absent if not spec.tracked else (llm if tracker is not None else keyless),
        "validator": (
            absent if not spec.validate else (llm if validator.kind == "llm" else keyless)
        ),
        "recommender": llm if spec.recommender == LLM_ONLY else keyless,
    }


def write_outputs(
    out_dir: str | pathlib.Path,
    results: Mapping[str, Any],
    dialogues: Mapping[str, Sequence[transcripts_lib.Transcript]],
    settings: MultiTurnSettings,
    header: str,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Writes `multi_turn.json`, `multi_turn.md` and `transcripts/*.jsonl`; returns the table."""
    out_dir = pathlib.Path(out_dir)
    for name, rows in dialogues.items():
        transcripts_lib.write_transcripts(
            out_dir / "transcripts" / f"{name}.jsonl", list(rows)[: settings.transcripts_per_system]
        )
    fileio.write_json(
        out_dir / "multi_turn.json",
        {"settings": stage_manifest.to_plain(dataclasses.asdict(settings)), "systems": results}
        | dict(extra or {}),
    )
    md = header + "\n\n" + to_markdown(results, settings.rounds)
    costs = {name: row["cost"] for name, row in results.items() if "cost" in row}
    if costs:
        labels = {name: row["label"] for name, row in results.items()}
        md += "\n\nToken cost per dialogue\n\n" + costs_lib.to_markdown(costs, labels)
    fileio.write_text(out_dir / "multi_turn.md", md + "\n")
    return md
