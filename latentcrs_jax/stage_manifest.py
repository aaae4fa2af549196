"""Completion manifests of pipeline stages: a stage is done when its manifest matches.

Each stage writes `<stage dir>/manifest.json` last (atomically) with a fingerprint of what it
was made from: its config section(s) and the content hash of its inputs. A later run compares
fingerprints: equal means complete (skip); different means the stage must be redone, and the
stage refuses to mix outputs of two configs.
"""

import hashlib
import json
import pathlib
from typing import Any

from latentcrs_jax import fileio

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
