"""The processed dataset on disk (format version 1) and its in-memory view.

`<workdir>/data/` holds:
  manifest.json        format version, the data config and its hash, per-file sha256,
                       the content hash over all files, and the statistics table;
  seq_offsets.npy      int64[U+1]  CSR offsets of the per-user sequences;
  seq_items.npy        int32[E]    item ids, each user's sequence in time order;
  users.json           raw user id of each user index;
  items.jsonl          N+1 item records (line 0 is PAD), see `latentcrs_jax.data.items`;
  <split>_<field>.npy  for split in train/valid/test and field in
                       user int32[S], history int32[S, W-1] (left-padded), target int32[S],
                       source int8[S] (0 = leave-one-out, j = j-th augmentation seed),
                       negatives int32[S, num_negatives].
The whole directory is written atomically (temp dir + rename); `.npy` and sorted-key JSON make
equal inputs give byte-identical files.
"""

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import numpy as np

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.data.errors import DataError, DatasetMismatchError

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
SAMPLE_FIELDS = ("user", "history", "target", "source", "negatives")


@dataclasses.dataclass(frozen=True)
class SampleSet:
    """The samples of one split (see the module docstring for shapes)."""

    user: np.ndarray
    history: np.ndarray
    target: np.ndarray
    source: np.ndarray
    negatives: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


@dataclasses.dataclass(frozen=True)
class ProcessedDataset:
    """A prepared dataset: sequences, item records and the EM samples of each split."""

    name: str
    domain: str
    seq_offsets: np.ndarray
    seq_items: np.ndarray
    user_raw_ids: list[str]
    items: list[dict[str, Any]]
    splits: dict[str, SampleSet]
    config: dict[str, Any]
    stats: dict[str, Any]

    @property
    def num_users(self) -> int:
        return len(self.seq_offsets) - 1

    @property
    def num_items(self) -> int:
        """Real items are 1..num_items; 0 is PAD."""
        return len(self.items) - 1

    @property
    def item_raw_ids(self) -> list[str]:
        return [it["raw_id"] for it in self.items]

    def sequence(self, user: int) -> np.ndarray:
        """int32[n_u]: the user's items in time order."""
        return self.seq_items[self.seq_offsets[user] : self.seq_offsets[user + 1]]

    def sequences(self) -> list[np.ndarray]:
        return [self.sequence(u) for u in range(self.num_users)]

    def sample_key(self, split: str, index: int) -> str:
        """The authors' customer_id, "<raw user>_<raw|seed|valid|test>", of one sample."""
        samples = self.splits[split]
        user = self.user_raw_ids[samples.user[index]]
        if split != "train":
            return f"{user}_{split}"
        source = int(samples.source[index])
        return f"{user}_{'raw' if source == 0 else self.config['augment_seeds'][source - 1]}"


def config_hash(data_config: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the data config."""
    blob = json.dumps(stage_manifest.to_plain(data_config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(
    data_dir: str | pathlib.Path,
    *,
    data_config,
    sequences: list[np.ndarray],
    user_raw_ids: list[str],
    items: list[dict[str, Any]],
    splits: dict[str, SampleSet],
    stats: dict[str, Any],
) -> None:
    """Writes a processed dataset atomically into `data_dir` (replacing any old one)."""
    cfg = stage_manifest.to_plain(data_config)
    lengths = np.asarray([len(s) for s in sequences], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    with fileio.atomic_directory(data_dir) as tmp:
        np.save(tmp / "seq_offsets.npy", offsets)
        np.save(tmp / "seq_items.npy", np.concatenate(sequences).astype(np.int32))
        (tmp / "users.json").write_text(json.dumps(user_raw_ids, ensure_ascii=False) + "\n")
        with (tmp / "items.jsonl").open("w", encoding="utf-8") as f:
            for item in items:
                f.write(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n")
        for split in SPLITS:
            for field in SAMPLE_FIELDS:
                np.save(tmp / f"{split}_{field}.npy", getattr(splits[split], field))
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        content = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": cfg.get("name", ""),
            "domain": cfg.get("domain", ""),
            "data_config": cfg,
            "config_hash": config_hash(cfg),
            "files": files,
            "content_hash": content,
            "stats": stats,
        }
        fileio.write_json(tmp / "manifest.json", manifest)


def read_manifest(data_dir: str | pathlib.Path) -> dict[str, Any]:
    """Reads `manifest.json`, with a clear error when there is no prepared dataset."""
    path = pathlib.Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError("no prepared dataset here; run launch/prepare.py first", str(path))
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"dataset format version {manifest.get('format_version')} is not the supported "
            f"{FORMAT_VERSION}; re-run launch/prepare.py",
            str(path),
        )
    return manifest


def check_config(manifest: dict[str, Any], data_config, data_dir) -> None:
    """Raises DatasetMismatchError naming the fields where `data_config` differs."""
    cfg = stage_manifest.to_plain(data_config)
    if config_hash(cfg) == manifest["config_hash"]:
        return
    old = manifest["data_config"]
    diffs = [
        f"{k}: dataset has {old.get(k)!r}, config has {cfg.get(k)!r}"
        for k in sorted(set(old) | set(cfg))
        if old.get(k) != cfg.get(k)
    ]
    raise DatasetMismatchError(
        f"the dataset in {data_dir} was prepared with a different data config ("
        + "; ".join(diffs)
        + "). Use another --workdir, or re-run launch/prepare.py with this config."
    )


def load(data_dir: str | pathlib.Path, data_config=None, verify: bool = True) -> ProcessedDataset:
    """Loads a processed dataset.

    Args:
      data_dir: `<workdir>/data`.
      data_config: if given, the dataset must have been prepared with exactly this config.
      verify: check every file against the sha256 recorded in the manifest.
    """
    data_dir = pathlib.Path(data_dir)
    manifest = read_manifest(data_dir)
    if data_config is not None:
        check_config(manifest, data_config, data_dir)
    if verify:
        for name, digest in manifest["files"].items():
            path = data_dir / name
            if not path.is_file() or _sha256(path) != digest:
                raise DataError("file missing or changed since prepare; re-run it", str(path))
    with (data_dir / "items.jsonl").open(encoding="utf-8") as f:
        items = [json.loads(line) for line in f]
    splits = {
        split: SampleSet(**{fld: np.load(data_dir / f"{split}_{fld}.npy") for fld in SAMPLE_FIELDS})
        for split in SPLITS
    }
    return ProcessedDataset(
        name=manifest["name"],
        domain=manifest["domain"],
        seq_offsets=np.load(data_dir / "seq_offsets.npy"),
        seq_items=np.load(data_dir / "seq_items.npy"),
        user_raw_ids=json.loads((data_dir / "users.json").read_text(encoding="utf-8")),
        items=items,
        splits=splits,
        config=manifest["data_config"],
        stats=manifest["stats"],
    )


def export_sequences(ds: ProcessedDataset, path: str | pathlib.Path) -> None:
    """Writes '<raw user id>\\t<raw item id> ...' per user (time order), users by raw id.

    Users sort numerically when every raw id is an integer, else as strings.
    """
    raw_items = ds.item_raw_ids
    users = list(range(ds.num_users))
    numeric = all(u.lstrip("-").isdigit() for u in ds.user_raw_ids)
    users.sort(key=lambda u: int(ds.user_raw_ids[u]) if numeric else ds.user_raw_ids[u])
    lines = [
        ds.user_raw_ids[u] + "\t" + " ".join(raw_items[i] for i in ds.sequence(u)) for u in users
    ]
    fileio.write_text(path, "\n".join(lines) + "\n")
