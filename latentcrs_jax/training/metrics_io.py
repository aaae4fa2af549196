"""Metrics as JSONL in the workdir, and progress logs with samples/s and ETA (absl logging).

Each JSONL line is one record `{"epoch": e, "step": s, "<split>/<name>": value, ...}`. On resume
the file is cut back to the records of epochs that the restored checkpoint covers, so a run
killed and restarted writes exactly the lines of a run that was never killed (up to its
"time/..." keys). `cumulative_seconds` adds up the wall time of a run resumed any number of
times.
"""

import json
import math
import pathlib
import time
from collections.abc import Mapping

import jax
from absl import logging

from latentcrs_jax import fileio


def _clean(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


class MetricsWriter:
    """Appends metric records to `<dir>/metrics.jsonl` (process 0 only on several hosts)."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.enabled = jax.process_index() == 0

    def truncate_after_epoch(self, last_epoch: int) -> None:
        """Keeps only records with epoch <= last_epoch (-1 removes everything)."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip() and json.loads(line).get("epoch", math.inf) <= last_epoch:
                kept.append(line)
        fileio.write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        """Appends one record and flushes."""
        if not self.enabled:
            return
        record = {"epoch": int(epoch), "step": int(step)}
        record.update({k: _clean(v) for k, v in sorted(metrics.items())})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        """All records so far."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def cumulative_seconds(records: list[dict]) -> dict[int, float]:
    """Wall time from the start of training to the end of each epoch, over every process that
    worked on the run (a resumed run restarts its per-process clock `time/fit_seconds`).

    Each epoch counts its `time/epoch_seconds` (since the previous record: the previous
    checkpoint save, K-means, training and evaluation). Records written before that key
    existed count their `time/fit_seconds` increment, or the value itself where it fell (a new
    process started there); a new process whose first epoch took longer than the old process
    had run is not detected, so such old runs can be undercounted. The partial epoch a killed
    process lost is not counted.

    Args:
      records: `MetricsWriter.read()` output; records without a time key are skipped.

    Returns:
      {epoch: seconds} for the epochs with a time key, in epoch order.
    """
    out: dict[int, float] = {}
    total, last_fit = 0.0, None
    for r in sorted(records, key=lambda r: r["epoch"]):
        fit = r.get("time/fit_seconds")
        if "time/epoch_seconds" in r:
            total += r["time/epoch_seconds"]
        elif fit is not None:
            total += fit - last_fit if last_fit is not None and fit >= last_fit else fit
        else:
            continue
        last_fit = fit
        out[int(r["epoch"])] = total
    return out


def format_seconds(seconds: float) -> str:
    """A duration for a progress line: "45s", "12m05s", "9h27m"."""
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    minutes = round(s / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def run_outlook(
    epoch: int, max_epochs: int, epochs_until_stop: int, seconds_per_epoch: float
) -> str:
    """Where a run stands after `epoch` (0-based) and how long it can still take.

    Args:
      epoch: the epoch just finished.
      max_epochs: the run's cap.
      epochs_until_stop: further epochs without improvement that stop it early.
      seconds_per_epoch: the mean wall time of an epoch so far.

    Returns:
      E.g. "82/300 epochs done, ~2m36s each; stops after epoch 120 (~1h41m) unless it
      improves, after epoch 299 (~9h27m) at the latest"; "" when no epoch is left.
    """
    left = max_epochs - epoch - 1
    if left <= 0 or epochs_until_stop <= 0:
        return ""
    head = f"{epoch + 1}/{max_epochs} epochs done, ~{format_seconds(seconds_per_epoch)} each; "
    last = f"after epoch {max_epochs - 1} (~{format_seconds(left * seconds_per_epoch)})"
    if epochs_until_stop >= left:
        return head + f"stops {last}"
    early = epochs_until_stop * seconds_per_epoch
    stop = f"after epoch {epoch + epochs_until_stop} (~{format_seconds(early)})"
    return head + f"stops {stop} unless it improves, {last} at the latest"


class ProgressLogger:
    """Logs `samples/s` and the ETA of the current epoch every `every_s` seconds."""

    def __init__(self, name: str, total_steps: int, every_s: float = 30.0):
        self.name, self.total_steps, self.every_s = name, total_steps, every_s
        self.start = self.last = time.perf_counter()
        self.samples = 0

    def update(self, step_in_epoch: int, samples: int, sync=None) -> None:
        """Call after each step with the samples it processed.

        Args:
          step_in_epoch: 0-based index of the step just dispatched.
          samples: real samples in it.
          sync: optional callable that blocks until the step has run; called before logging,
            so that rates count finished work, not asynchronously dispatched work.
        """
        self.samples += samples
        now = time.perf_counter()
        if now - self.last < self.every_s and step_in_epoch + 1 < self.total_steps:
            return
        if sync is not None:
            sync()
            now = time.perf_counter()
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        done = step_in_epoch + 1
        eta = elapsed / done * (self.total_steps - done)
        logging.info(
            "%s: step %d/%d, %.1f samples/s, elapsed %.0fs, ETA %.0fs",
            self.name,
            done,
            self.total_steps,
            self.samples / elapsed,
            elapsed,
            eta,
        )

    def rate(self) -> float:
        """Samples per second since the start."""
        return self.samples / max(time.perf_counter() - self.start, 1e-9)
