"""Multi-turn evaluation settings (docs/method.md 5): the systems (rows of the table) and
`MultiTurnSettings`, the typed mirror of `config.multi_turn`.

The protocol is in multi_turn_protocol.py, the per-system results and the written files in
multi_turn_results.py, and the pipeline stage (`launch/multi_turn.py`) in multi_turn_stage.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from latentcrs_jax.conversation import llm_endpoint, llm_tracker
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.state import RANKING_TEXTS
from latentcrs_jax.errors import UserInputError


class MultiTurnConfigError(UserInputError, ValueError):
    """A bad `config.multi_turn` field."""


# Fields that change speed or memory, not the dialogues: never fingerprinted.
SPEED_ONLY = ("item_chunk",)


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """A row of the table: which recommender, and whether the hard filter re-orders it."""

    name: str  # Row key, also the transcript file name.
    label: str  # Row label.
    recommender: str  # Key into `recommenders.load_systems(...)[0]`.
    hard_filter: bool  # LatentCRS^F-style filter on the top candidates.
    uses_text: bool = True  # False: the recommender ignores the dialogue.
    validate: bool = False  # LatentCRS^V: a validator re-ranks ^F's top candidates.
    tracked: bool = True  # False: the state tracker never reads its dialogues (LLM-only).


LLM_ONLY = "llm"  # The recommender key of the LLM-only baseline (no trained model).


SYSTEM_SPECS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec("latentcrs_f", "LatentCRS^F", "latentcrs", True),
        SystemSpec("latentcrs", "LatentCRS (no filter)", "latentcrs", False),
        SystemSpec("backbone", "backbone SASRec (text ignored)", "backbone", False, False),
        SystemSpec("text_f", "text-only retrieval + filter", "text", True),
        SystemSpec("fusion_f", "joint fusion (no EM) + filter", "fusion", True),
        SystemSpec("late_fusion_f", "late fusion + filter", "late_fusion", True),
        SystemSpec("latentcrs_v", "LatentCRS^V", "latentcrs", True, validate=True),
        SystemSpec("llm_only", "LLM only (zero-shot)", LLM_ONLY, False, False, tracked=False),
    )
}


@dataclasses.dataclass(frozen=True)
class MultiTurnSettings:
    """Typed mirror of `config.multi_turn` (field comments live in configs/base.py)."""

    num_samples: int = 500
    rounds: int = 5
    top_k: int = 5
    candidates: int = 50
    sample_seed: int = 1024
    ranking_text: str = "dialogue"
    transcripts_per_system: int = 5
    systems: tuple[str, ...] = tuple(SYSTEM_SPECS)
    batch_size: int = 256
    item_chunk: int = 0
    faithful_filter_order: bool = False
    state_tracker: str = "rules"
    tracker_base_url: str = ""
    tracker_model: str = ""
    tracker_api_key_env: str = "OPENAI_API_KEY"
    tracker_temperature: float = 0.0
    tracker_max_tokens: int = 512
    tracker_timeout_s: float = 60.0
    tracker_max_retries: int = 5
    tracker_max_concurrency: int = 4
    tracker_max_prompt_features: int = 200
    tracker_excluded_features: bool = True
    tracker_tokenizer: str = ""
    validator: str = "standin"
    validator_candidates: int = 20
    validator_standin_weight: float = 0.5
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key_env: str = "OPENAI_API_KEY"
    llm_temperature: float = 0.0
    llm_max_tokens: int = 512
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 5
    llm_max_concurrency: int = 4
    llm_tokenizer: str = ""
    llm_only_titles: int = 10
    mask_history: bool = True

    def __post_init__(self):
        if self.ranking_text not in RANKING_TEXTS:
            raise MultiTurnConfigError(
                f"multi_turn.ranking_text must be one of {RANKING_TEXTS}, got {self.ranking_text!r}"
            )
        try:
            self.tracker()
        except llm_tracker.TrackerConfigError as e:
            raise MultiTurnConfigError(str(e)) from e
        if self.ranking_text == "intents" and self.state_tracker != "llm":
            raise MultiTurnConfigError(
                "multi_turn.ranking_text='intents' ranks the LLM tracker's human intents: it "
                "needs multi_turn.state_tracker='llm'"
            )
        for name in (
            "rounds",
            "top_k",
            "candidates",
            "batch_size",
            "validator_candidates",
            "llm_only_titles",
            "llm_max_concurrency",
        ):
            if int(getattr(self, name)) < 1:
                raise MultiTurnConfigError(f"multi_turn.{name} must be >= 1")
        if int(self.item_chunk) < 0:
            raise MultiTurnConfigError("multi_turn.item_chunk must be >= 0 (0: all items at once)")
        if self.validator not in validator_lib.KINDS:
            raise MultiTurnConfigError(
                f"multi_turn.validator must be one of {validator_lib.KINDS}, got {self.validator!r}"
            )
        if not 0.0 <= self.validator_standin_weight <= 1.0:
            raise MultiTurnConfigError("multi_turn.validator_standin_weight must be in [0, 1]")
        missing = self.endpoint().missing()
        if self.validator == "llm" and missing:
            raise MultiTurnConfigError(
                f"multi_turn.validator='llm' needs {' and '.join(missing)} (an OpenAI-compatible "
                "endpoint, e.g. http://127.0.0.1:8000/v1, and its model)"
            )
        unknown = [s for s in self.systems if s not in SYSTEM_SPECS]
        if unknown:
            raise MultiTurnConfigError(
                f"unknown multi_turn system(s) {unknown}; known: {list(SYSTEM_SPECS)}"
            )

    @classmethod
    def from_config(cls, section: Any, mask_history: bool = True) -> MultiTurnSettings:
        """Builds from a ConfigDict section (or mapping); unknown keys are an error."""
        values = dict(section.items()) if section is not None else {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise MultiTurnConfigError(f"unknown multi_turn field(s) {unknown}; known: {names}")
        values.setdefault("mask_history", bool(mask_history))
        values["systems"] = tuple(values.get("systems", cls.systems))
        return cls(**values)

    def endpoint(self) -> llm_endpoint.EndpointSettings:
        """The endpoint of the LLM validator and the LLM-only baseline (the `llm_*` fields)."""
        names = [f.name for f in dataclasses.fields(llm_endpoint.EndpointSettings)]
        return llm_endpoint.EndpointSettings(**{n: getattr(self, f"llm_{n}") for n in names})

    def tracker(self) -> llm_tracker.TrackerSettings:
        """The state-tracker settings (`state_tracker` and the `tracker_*` fields)."""
        # Every TrackerSettings field but `kind` is the multi_turn field `tracker_<name>`.
        names = [f.name for f in dataclasses.fields(llm_tracker.TrackerSettings)]
        return llm_tracker.TrackerSettings(
            kind=self.state_tracker,
            **{n: getattr(self, f"tracker_{n}") for n in names if n != "kind"},
        )
