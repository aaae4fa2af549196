"""Entry points: simulator settings, a factory, batch first turns and utterance statistics.

`simulate_first_turns` is what `launch/simulate.py` calls: it picks the template or the LLM
simulator from the config section (`configs/base.py:get_simulator_config`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.simulator import tokens
from latentcrs_jax.simulator.chat_client import ChatClient, ChatConfig
from latentcrs_jax.simulator.llm import LLMSimulator
from latentcrs_jax.simulator.state import Utterance
from latentcrs_jax.simulator.template import TemplateSimulator

KINDS = ("template", "llm")


@dataclasses.dataclass(frozen=True)
class SimulatorConfig:
    """Typed mirror of `config.simulator` (field comments live in configs/base.py)."""

    kind: str = "template"
    seed: int = 0
    max_conditions: int = 3
    history_mention_prob: float = 0.5
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_max_concurrency: int = 4
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 5
    llm_leak_retries: int = 2
    llm_temperature: float = 0.7
    llm_tokenizer: str = ""

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | Any | None) -> SimulatorConfig:
        """Builds from a ConfigDict section or a mapping; unknown keys are an error."""
        if section is None:
            return cls()
        if isinstance(section, SimulatorConfig):
            return section
        values = dict(section.items()) if hasattr(section, "items") else dict(section)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown simulator config field(s) {unknown}; known: {sorted(names)}")
        config = cls(**values)
        if config.kind not in KINDS:
            raise ValueError(f"simulator kind must be one of {KINDS}, got {config.kind!r}")
        return config

    def chat_config(self) -> ChatConfig:
        """The `ChatConfig` of the LLM path."""
        return ChatConfig(
            base_url=self.llm_base_url,
            model=self.llm_model,
            api_key_env=self.llm_api_key_env,
            temperature=self.llm_temperature,
            timeout_s=self.llm_timeout_s,
            max_retries=self.llm_max_retries,
            max_concurrency=self.llm_max_concurrency,
            seed=self.seed,
            tokenizer=self.llm_tokenizer,
        )


def make_simulator(
    config_section: Mapping[str, Any] | Any | None,
    items: Sequence[Mapping[str, Any]],
    domain: str,
    cache_path: str | os.PathLike[str] | None = None,
) -> TemplateSimulator | LLMSimulator:
    """The simulator the config asks for.

    Args:
      config_section: `config.simulator` (ConfigDict), a mapping, a SimulatorConfig or None.
      items: the items table; items[i] is the dict of item id i (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      cache_path: JSONL response cache of the LLM path (ignored by the template simulator).
    """
    cfg = SimulatorConfig.from_config(config_section)
    if cfg.kind == "template":
        return TemplateSimulator(
            items,
            domain,
            seed=cfg.seed,
            max_conditions=cfg.max_conditions,
            history_mention_prob=cfg.history_mention_prob,
        )
    client = ChatClient(cfg.chat_config(), cache_path=cache_path)
    return LLMSimulator(items, domain, client, leak_retries=cfg.llm_leak_retries)


def simulate_first_turns(
    samples_history: np.ndarray | Sequence[Sequence[int]],
    samples_target: np.ndarray | Sequence[int],
    sample_keys: Sequence[str],
    items: Sequence[Mapping[str, Any]],
    domain: str,
    config_section: Mapping[str, Any] | Any | None,
    cache_path: str | os.PathLike[str] | None = None,
) -> list[Utterance]:
    """First-turn utterances of every sample.

    Args:
      samples_history: int32[S, H] history item ids, left-padded with 0.
      samples_target: int32[S] target item ids.
      sample_keys: S unique keys (e.g. "test/17"); they seed the template simulator.
      items: the items table; items[i] is the dict of item id i (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      config_section: `config.simulator`.
      cache_path: JSONL response cache for the LLM path (e.g. in the workdir).

    Returns:
      S `Utterance`s in sample order.
    """
    history = np.asarray(samples_history)
    target = np.asarray(samples_target)
    if history.ndim != 2 or target.ndim != 1 or history.shape[0] != target.shape[0]:
        raise ValueError(
            f"expected history int[S, H] and target int[S], got {history.shape} and {target.shape}"
        )
    if len(sample_keys) != target.shape[0]:
        raise ValueError(f"{len(sample_keys)} sample keys for {target.shape[0]} samples")
    if len(set(sample_keys)) != len(sample_keys):
        raise ValueError("sample keys must be unique")
    sim = make_simulator(config_section, items, domain, cache_path=cache_path)
    rows = [[int(i) for i in row] for row in history]
    utts = sim.first_turns(rows, [int(t) for t in target], list(sample_keys))
    stats = utterance_stats(utts)
    logging.info("simulated %d first turns: %s", len(utts), stats)
    return utts


def utterance_stats(utterances: Sequence[Utterance]) -> dict[str, float]:
    """Counts for reports: samples, distinct texts, mean conditions, history mentions, leaks;
    for LLM utterances also their calls and tokens ("tokens_estimated": calls counted by
    estimate, see `tokens.py`)."""
    n = len(utterances)
    out = {
        "samples": n,
        "distinct": len({u.text for u in utterances}),
        "mean_conditions": float(np.mean([len(u.conditions) for u in utterances])) if n else 0.0,
        "history_mention_rate": (
            float(np.mean([u.history_item is not None for u in utterances])) if n else 0.0
        ),
        "leaked": sum(u.leaked for u in utterances),
    }
    usage = tokens.total([u.usage for u in utterances if u.usage is not None])
    if usage.calls:
        out |= {
            "llm_calls": usage.calls,
            "prompt_tokens": usage.prompt,
            "completion_tokens": usage.completion,
            "tokens_estimated": usage.estimated,
        }
    return out
