"""EM settings and phase plans: `EMConfig` (the `config.em` section), which fields stay out of
stage fingerprints, and the phases each plan runs (docs/method.md 3.5). The tasks that train
the phases are in `em.py`."""

import dataclasses
from typing import Any

from latentcrs_jax import config_utils
from latentcrs_jax.models import latentcrs

HEADS = ("prior", "posterior", "backbone")
PASS_HEAD = {"M": "prior", "E": "posterior"}  # The head each pass trains, in HEADS order.


@dataclasses.dataclass(frozen=True)
class EMConfig:
    """EM training settings (the `config.em` section; see configs/base.py for each field)."""

    batch_size: int = 480
    eval_batch_size: int = 480
    learning_rate: float = 1e-3
    lr_end_factor: float = 0.01
    lr_decay_epochs: int = 50
    e_rank_weight: float = 5.0
    e_kl_weight: float = 1.0
    m_kl_weight: float = 1.0
    m_nce_weight: float = 0.0
    m_rec_weight: float = 5.0
    temperature: float = 1.0
    text_hidden: int = 1024
    text_dropout: float = 0.5
    max_epochs: int = 200
    patience: int = 20
    mask_history: bool = True
    full_softmax: bool = False
    seed: int = 42
    faithful_e_target: bool = False
    faithful_nce: bool = False
    faithful_layer_norm: bool = False
    faithful_backbone: bool = False
    faithful_duplicates: bool = False
    faithful_same_y_m: bool = False
    faithful_lr: bool = False
    prior_temperature: float = 1.0
    prior_top_k: int = 0
    m_entropy_weight: float = 0.0
    residual_weight: float = 0.0
    text_item_weight: float = 0.0
    eval_item_chunk: int = 0
    checkpoint_interval_s: float = 60.0

    def __post_init__(self):
        for name in EM_SPEED_ONLY:  # speed settings: a count or seconds, never negative
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, section) -> "EMConfig":
        return cls(**config_utils.section_values(cls, section, "em"))

    @property
    def prior_config(self) -> latentcrs.PriorConfig:
        return latentcrs.PriorConfig(
            text_hidden=self.text_hidden,
            text_dropout=self.text_dropout,
            mlp_layer_norm=not self.faithful_layer_norm,
            temperature=self.prior_temperature,
            top_k=self.prior_top_k,
            residual_weight=self.residual_weight,
            text_item=bool(self.text_item_weight),
            text_item_init=self.text_item_weight or 1.0,
        )


# Fields added after the first release, at the value that trains as before they existed (left
# out of stage fingerprints at that value, so finished workdirs stay complete).
EM_NEUTRAL = {
    "prior_temperature": 1.0,
    "prior_top_k": 0,
    "m_entropy_weight": 0.0,
    "residual_weight": 0.0,
    "text_item_weight": 0.0,
}
# Fields that change speed or memory, not the trained networks: never fingerprinted.
EM_SPEED_ONLY = ("eval_item_chunk", "checkpoint_interval_s")


@dataclasses.dataclass(frozen=True)
class EMPhase:
    """One training run: which passes each epoch, which head stops it, which weights.

    Attributes:
      name: directory name under `<workdir>/em/seed<k>/`.
      passes: passes of one epoch, in order ("E": train q; "M": train the prior).
      stop_head: the head whose valid NDCG@10 drives early stopping.
      init_from: phase whose best params initialise this one ("" = fresh networks).
      overrides: EMConfig fields replaced for this phase.
    """

    name: str
    passes: tuple[str, ...]
    stop_head: str
    init_from: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()


def main_plan() -> tuple[EMPhase, ...]:
    """The authors' three phases (docs/method.md 3.5)."""
    return (
        EMPhase("posterior", ("E",), "posterior", overrides=(("e_kl_weight", 0.0),)),
        EMPhase("prior", ("M",), "prior", init_from="posterior"),
        EMPhase("em", ("E", "M"), "prior", init_from="prior"),
    )


def _ablation(prefix: str, **weights) -> tuple[EMPhase, ...]:
    o = tuple(weights.items())
    return (
        EMPhase(f"{prefix}_prior", ("M",), "prior", init_from="posterior", overrides=o),
        EMPhase(f"{prefix}_em", ("E", "M"), "prior", init_from=f"{prefix}_prior", overrides=o),
    )


# Variant name -> phases run after (and sharing) the main plan's posterior phase.
PHASE_PLANS: dict[str, tuple[EMPhase, ...]] = {
    "latentcrs": main_plan(),
    # The prior's architecture trained with the rec loss alone: no q, no KL, no EM.
    "fusion": (
        EMPhase(
            "fusion",
            ("M",),
            "prior",
            overrides=(("m_kl_weight", 0.0), ("m_nce_weight", 0.0)),
        ),
    ),
    "no_kl": _ablation("no_kl", e_kl_weight=0.0, m_kl_weight=0.0),
    "no_rec": _ablation("no_rec", m_rec_weight=0.0),
}
