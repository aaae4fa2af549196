"""Completion manifests of pipeline stages: a stage is done when its manifest matches.

Each stage writes `<stage dir>/manifest.json` last (atomically) with a fingerprint of what it
was made from: its config section(s) and the content hash of its inputs. A later run compares
fingerprints: equal means complete (skip); different means the outputs were made with another
config.

One policy for outputs of another config: a stage never resumes them or mixes them with the
current config's. Derived outputs are redone: the EM phases delete their directory and start
over (`claim(..., replace=True)`); the stages without checkpoints (simulate, encode,
multi-turn) rewrite their outputs in place, keeping their content-keyed caches (LLM replies,
embeddings); the one-turn table and the report are re-derived on every run. The roots every
later stage derives from are never replaced: the dataset (`dataset.check_config`) and the
backbone (`claim(..., replace=False)`) refuse with one error line naming the directory, so
that a changed config never silently discards hours of training.
"""

import hashlib
import json
import pathlib
import shutil
from typing import Any

from absl import logging

from latentcrs_jax import fileio
from latentcrs_jax.errors import UserInputError

MANIFEST = "manifest.json"
STARTED = "started.json"  # The fingerprint of the config an unfinished stage was started with.


def _default(value: Any) -> Any:
    """JSON fallback: ConfigDicts as dicts, tuples/sets/arrays as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    return list(value)


def to_plain(value: Any) -> Any:
    """Canonical JSON-ready copy of configs, tuples and arrays (for hashing and manifests)."""
    return json.loads(json.dumps(value, sort_keys=True, default=_default))


def fingerprint(**inputs: Any) -> str:
    """sha256 over the canonical JSON of the named inputs (configs, upstream hashes)."""
    blob = json.dumps(to_plain(inputs), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def section(
    values: Any,
    skip: tuple[str, ...] = (),
    neutral: dict | None = None,
    fixed: dict | None = None,
) -> dict:
    """A config section as a plain dict for `fingerprint`, without the fields in `skip` (those
    that do not change a stage's outputs) and without fields added later that hold their
    `neutral` value (the one that reproduces the behaviour from before they existed), so that
    adding a field never turns existing workdirs into "another config". Fields in `fixed` are
    hashed at the given value whatever they hold: like `skip`, for fields that never change
    the outputs, but keeping the fingerprints of sections hashed whole before (at their
    defaults) unchanged."""
    plain = to_plain(values)
    neutral = to_plain(neutral or {})
    plain.update({k: v for k, v in to_plain(fixed or {}).items() if k in plain})
    return {
        k: v for k, v in plain.items() if k not in skip and not (k in neutral and neutral[k] == v)
    }


def read(stage_dir: str | pathlib.Path) -> dict[str, Any] | None:
    """The stage's manifest, or None when the stage never finished."""
    path = pathlib.Path(stage_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_started(stage_dir: str | pathlib.Path) -> str | None:
    """The fingerprint an unfinished stage was started with, or None when none is recorded."""
    path = pathlib.Path(stage_dir) / STARTED
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mark_started(stage_dir: str | pathlib.Path, fp: str) -> None:
    """Records `fp` as the config of the stage's unfinished run (process 0 calls it)."""
    fileio.write_json(pathlib.Path(stage_dir) / STARTED, fp)


def is_complete(stage_dir: str | pathlib.Path, fp: str) -> bool:
    """True when the stage finished with exactly this fingerprint."""
    manifest = read(stage_dir)
    return manifest is not None and manifest.get("fingerprint") == fp


def write(stage_dir: str | pathlib.Path, fp: str, **info: Any) -> None:
    """Marks the stage complete (call after every output is in place)."""
    fileio.write_json(pathlib.Path(stage_dir) / MANIFEST, {"fingerprint": fp, **to_plain(info)})


def content_hash(stage_dir: str | pathlib.Path) -> str:
    """The fingerprint recorded by a finished upstream stage (its identity downstream)."""
    manifest = read(stage_dir)
    if manifest is None:
        raise FileNotFoundError(f"{stage_dir} has not finished (no {MANIFEST})")
    return manifest.get("content_hash") or manifest["fingerprint"]


def claim(stage_dir: str | pathlib.Path, fp: str, *, replace: bool, writer: bool = True) -> None:
    """Applies the policy for outputs of another config before an unfinished stage runs.

    Args:
      stage_dir: the stage's directory.
      fp: the current config's fingerprint, recorded as the unfinished run's (`STARTED`).
      replace: True: a directory started with anything but `fp` is deleted and the stage starts
        over (derived outputs); False: outputs or an unfinished run of another config are an
        error (roots), and an unfinished run without a record is claimed by `fp`.
      writer: whether this process writes (process 0; the others wait at a barrier after).

    Raises:
      UserInputError: `replace` is False and `stage_dir` holds another config's outputs.
    """
    out = pathlib.Path(stage_dir)
    started = read_started(out)
    if replace:
        if writer and started != fp:
            if out.exists():
                logging.warning("%s was made with another config; starting it over", out)
                shutil.rmtree(out)
            mark_started(out, fp)
        return
    manifest = read(out)
    if manifest is not None and manifest.get("fingerprint") != fp:
        raise UserInputError(
            f"{out} holds outputs made with another config; use another --workdir "
            "(or delete it to start over)"
        )
    if started is not None and started != fp:
        raise UserInputError(
            f"{out} holds an unfinished run of another config; use another --workdir "
            "(or delete it to start over)"
        )
    if started is None and writer:
        mark_started(out, fp)
