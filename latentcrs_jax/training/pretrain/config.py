"""Backbone-training settings: `PretrainConfig` and the readers of the config sections."""

import dataclasses

from latentcrs_jax import config_utils
from latentcrs_jax.evaluation import ranking
from latentcrs_jax.models import sasrec

# "iclrec": next-item BCE + instance and intent contrast (the authors'); "ce": full-softmax
# cross-entropy (SASRec-CE); "bce": ICLRec's next-item BCE alone (SASRec as ICLRec trains it,
# without the contrastive terms: the ablation that shows what they add); "ce_intent": SASRec-CE
# plus ICLRec's intent term (the intent-aligned backbone, beyond the paper).
LOSSES = ("iclrec", "ce", "bce", "ce_intent")
# The losses with ICLRec's intent term (K-means every epoch, augmented views).
INTENT_LOSSES = ("iclrec", "ce_intent")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Backbone-training settings (see configs/base.py:get_pretrain_config for each field)."""

    loss: str = "iclrec"
    batch_size: int = 256
    eval_batch_size: int = 256
    lr: float = 1e-3
    lr_decay_epochs: tuple[int, ...] = ()
    lr_decay_factor: float = 0.1
    max_epochs: int = 300
    patience: int = 40
    early_stop_metric: str = "valid/ndcg@20"
    cf_weight: float = 0.1
    intent_cf_weight: float = 0.1
    temperature: float = 1.0
    n_views: int = 3
    num_intents: int = 512
    kmeans_iters: int = 20
    kmeans_redo: int = 5
    augment_window: int = 0
    mask_history_in_eval: bool = True
    eval_item_chunk: int = 0
    checkpoint_interval_s: float = 60.0
    ce_chunk: int = 512
    microbatch: int = 16
    length_buckets: int = 0
    remat: bool = False
    query_blocks: int = 4
    ks: tuple[int, ...] = ranking.DEFAULT_KS
    eval_splits: tuple[str, ...] = ("valid",)
    faithful_centroid_timing: bool = False
    seed: int = 1

    @property
    def microbatch_rows(self) -> int:
        """Sequences per scan step: `microbatch`, or the whole batch when it is 0 or larger."""
        return self.microbatch if 0 < self.microbatch < self.batch_size else self.batch_size

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"pretrain.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.length_buckets and self.loss in INTENT_LOSSES:
            raise ValueError(
                f"length_buckets does not apply to loss={self.loss!r} (its in-batch contrast "
                "wants random batches, and its intent term pools over every padding position); "
                "set pretrain.length_buckets=0"
            )
        if not set(self.eval_splits) <= {"valid", "test"} or "valid" not in self.eval_splits:
            raise ValueError(
                f"eval_splits must be 'valid' plus optionally 'test', got {self.eval_splits}"
            )
        if self.query_blocks < 1:
            raise ValueError(f"query_blocks must be >= 1, got {self.query_blocks}")
        if not self.checkpoint_interval_s >= 0:
            raise ValueError(
                f"checkpoint_interval_s must be >= 0, got {self.checkpoint_interval_s}"
            )
        if self.ce_chunk < 1:
            raise ValueError(f"ce_chunk must be >= 1, got {self.ce_chunk}")
        if self.batch_size % self.microbatch_rows:
            raise ValueError(
                f"microbatch={self.microbatch} must divide batch_size={self.batch_size}"
            )
        if self.loss in INTENT_LOSSES and self.n_views < 2:
            raise ValueError(f"n_views must be >= 2 for the {self.loss} loss, got {self.n_views}")


def model_config_from(backbone, num_items: int) -> sasrec.SASRecConfig:
    """SASRecConfig from the `config.backbone` section ("pre_ln" blocks come with the original
    SASRec's FFN width D and LayerNorm eps 1e-8)."""
    block = str(backbone.get("block", "post_ln"))
    original = {"ffn_mult": 1, "ln_eps": 1e-8} if block == "pre_ln" else {}
    return sasrec.SASRecConfig(
        num_items=num_items,
        max_len=int(backbone.max_len),
        hidden=int(backbone.hidden),
        num_layers=int(backbone.num_layers),
        num_heads=int(backbone.num_heads),
        hidden_dropout=float(backbone.hidden_dropout),
        attn_dropout=float(backbone.attn_dropout),
        init_range=float(backbone.init_range),
        block=block,
        positions=str(backbone.get("positions", "from_end")),
        **original,
    )


def pretrain_config_from(section) -> PretrainConfig:
    """PretrainConfig from the `config.pretrain` section (unknown keys are an error)."""
    values = config_utils.section_values(PretrainConfig, section, "pretrain")
    if "ks" in values:
        values["ks"] = tuple(int(k) for k in values["ks"])
    if "lr_decay_epochs" in values:
        values["lr_decay_epochs"] = tuple(int(e) for e in values["lr_decay_epochs"])
    if "eval_splits" in values:
        values["eval_splits"] = tuple(str(k) for k in values["eval_splits"])
    return PretrainConfig(**values)
