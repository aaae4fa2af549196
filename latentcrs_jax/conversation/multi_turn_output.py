"""The multi-turn stage's outputs: the SR@r / AT table and the files under `<workdir>/eval/`
(`multi_turn.json`, `multi_turn.md`, `transcripts/<system>.jsonl`)."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.conversation import transcripts as transcripts_lib
from latentcrs_jax.conversation.multi_turn import MultiTurnSettings


def to_markdown(results: Mapping[str, Mapping[str, Any]], rounds: int) -> str:
    """The table: one row per system, SR@1..SR@R and AT."""
    head = [f"SR@{r}" for r in range(1, rounds + 1)] + ["AT"]
    lines = ["| system | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in results.values():
        cells = [f"{v:.4f}" for v in row["success_rate"]] + [f"{row['average_turns']:.3f}"]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    fileio.write_text(out_dir / "multi_turn.md", md + "\n")
    return md
