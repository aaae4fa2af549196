"""The paper's token-cost table of the multi-turn evaluation: tokens per dialogue and per turn.

Every LLM call a system's dialogue needs is counted for that system, by role:
* simulator: the user simulator's first turn (from the simulate stage) and its replies;
* tracker: the LLM state tracker, one call per user turn;
* validator: LatentCRS^V's validator, one call per round;
* recommender: the LLM-only baseline, one call per round.
A request shared by identical dialogues of several systems (sent once, or answered from the
cache) counts for each: the table is what each variant costs on its own. Counts come from the
endpoint's `usage` field, else a local tokenizer, else an estimate (`simulator/tokens.py`),
marked "*" in the table. A part that runs without an LLM (template simulator, rule tracker,
stand-in validator, the trained recommenders with their local encoder) costs 0 tokens and is
shown as such, "0 (keyless)"; "-" marks a part the system does not have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentcrs_jax.simulator.tokens import TokenUsage

ROLES = ("simulator", "tracker", "validator", "recommender")
LLM = "llm"  # A part backed by an LLM endpoint.
KEYLESS = "keyless"  # A part that runs without an LLM (0 tokens).
ABSENT = "absent"  # A part the system does not have.


def system_costs(
    usage: Mapping[str, TokenUsage],
    parts: Mapping[str, str],
    dialogues: int,
    turns: int,
) -> dict[str, Any]:
    """The cost row of one system.

    Args:
      usage: role -> the summed usage of the system's dialogues.
      parts: role -> LLM | KEYLESS | ABSENT.
      dialogues: dialogues evaluated.
      turns: recommendation rounds played, summed over the dialogues.

    Returns:
      {"dialogues", "turns", "roles": {role: {"part", **usage}}, "total": usage,
       "tokens_per_dialogue", "tokens_per_turn", "calls_per_dialogue"}.
    """
    roles = {}
    total = TokenUsage()
    for role in ROLES:
        u = usage.get(role, TokenUsage())
        roles[role] = {"part": parts.get(role, ABSENT), **u.to_dict()}
        total = total + u
    return {
        "dialogues": dialogues,
        "turns": turns,
        "roles": roles,
        "total": total.to_dict(),
        "tokens_per_dialogue": total.total / dialogues if dialogues else 0.0,
        "tokens_per_turn": total.total / turns if turns else 0.0,
        "calls_per_dialogue": total.calls / dialogues if dialogues else 0.0,
    }


def _cell(role: Mapping[str, Any], dialogues: int) -> str:
    if role["part"] == ABSENT:
        return "-"
    if role["part"] == KEYLESS:
        return "0 (keyless)"
    u = TokenUsage.from_dict(role)
    per = u.total / dialogues if dialogues else 0.0
    calls = u.calls / dialogues if dialogues else 0.0
    mark = "*" if u.estimated else ""
    return f"{per:.1f}{mark} ({calls:.2f} calls)"


def to_markdown(costs: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> str:
    """The cost table: per system, tokens per dialogue by role, in all, per turn, and calls."""
    head = [*ROLES, "tokens / dialogue", "tokens / turn", "calls / dialogue"]
    lines = ["| system | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    estimated = False
    for name, row in costs.items():
        n = row["dialogues"]
        cells = [_cell(row["roles"][r], n) for r in ROLES]
        mark = "*" if row["total"]["estimated"] else ""
        estimated = estimated or bool(mark)
        cells += [
            f"{row['tokens_per_dialogue']:.1f}{mark}",
            f"{row['tokens_per_turn']:.1f}{mark}",
            f"{row['calls_per_dialogue']:.2f}",
        ]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    notes = [
        "",
        "Prompt + completion tokens of every LLM call a system's dialogues make (the first "
        "simulated turn included), per dialogue and per recommendation round played; a role "
        'cell is "tokens per dialogue (calls per dialogue)". "0 (keyless)": that part runs '
        'without an LLM and costs no tokens; "-": the system has no such part.',
    ]
    if estimated:
        notes.append(
            "\\* estimated for some calls: the replies carried no `usage` and no local "
            "tokenizer was set (characters / 4 plus per-message overheads)."
        )
    return "\n".join(lines + notes)
