"""User simulator: a deterministic template simulator (default), an optional LLM simulator
against any OpenAI-compatible endpoint, and the leak check that guards both.

Modules: `leak` (does a text name the target?), `attributes` (what may be revealed),
`phrases` (template banks), `template` (template simulator), `prompts` (the paper's prompt),
`chat_client` (HTTP client with retries, concurrency bound and cache), `llm` (LLM simulator),
`state` (serialisable utterances and dialogue state), `api` (config, factory, batch entry).
"""

from latentcrs_jax.simulator.api import (
    SimulatorConfig,
    make_simulator,
    simulate_first_turns,
    utterance_stats,
)
from latentcrs_jax.simulator.leak import distinctive_words, find_leak
from latentcrs_jax.simulator.llm import LLMSimulator
from latentcrs_jax.simulator.state import DialogueState, Utterance
from latentcrs_jax.simulator.template import TemplateSimulator

__all__ = [
    "DialogueState",
    "LLMSimulator",
    "SimulatorConfig",
    "TemplateSimulator",
    "Utterance",
    "distinctive_words",
    "find_leak",
    "make_simulator",
    "simulate_first_turns",
    "utterance_stats",
]
