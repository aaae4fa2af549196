"""Early stopping on one validation metric (ICLRec `utils.py:EarlyStopping`, delta 0).

An epoch improves when its metric is strictly better than the best so far; the run stops after
`patience` epochs in a row without improvement. The state is a small dict so it can travel in a
checkpoint and resume exactly.
"""

import dataclasses
import math


@dataclasses.dataclass
class EarlyStopping:
    """Tracks the best value of a metric and the epochs since it improved.

    Attributes:
      metric: metric name, e.g. "valid/ndcg@20".
      patience: epochs without improvement before stopping.
      mode: "max" (higher is better) or "min".
      best: best value so far.
      best_epoch: epoch of the best value (-1 before any).
      bad_epochs: epochs since the last improvement.
    """

    metric: str
    patience: int
    mode: str = "max"
    best: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.best_epoch < 0:
            self.best = -math.inf if self.mode == "max" else math.inf

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Records one epoch's metrics; returns True if it is a new best.

        Raises:
          KeyError: the metric is missing from `metrics`.
        """
        if self.metric not in metrics:
            raise KeyError(f"early-stopping metric {self.metric!r} not in {sorted(metrics)}")
        value = float(metrics[self.metric])
        better = value > self.best if self.mode == "max" else value < self.best
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        """True once `patience` epochs in a row did not improve."""
        return self.bad_epochs >= self.patience

    @property
    def epochs_until_stop(self) -> int:
        """How many more epochs without improvement end the run (0 once it should stop)."""
        return max(self.patience - self.bad_epochs, 0)

    def state_dict(self) -> dict:
        """JSON-friendly state."""
        best = self.best if math.isfinite(self.best) else None
        return {"best": best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        """Restores `state_dict()` output."""
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        if state["best"] is None:
            self.best = -math.inf if self.mode == "max" else math.inf
        else:
            self.best = float(state["best"])
