"""The prepare stage: raw files -> processed dataset in `<workdir>/data` (skipped when done)."""

import pathlib
import time

from absl import logging

from latentcrs_jax.data import dataset, negatives, preprocess, readers, splits, stats
from latentcrs_jax.data.errors import DataError


def data_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """Where a workdir keeps its processed dataset."""
    return pathlib.Path(workdir) / "data"


def _validate(data_config) -> None:
    if data_config.min_user_items < 3:
        raise DataError("config.data.min_user_items must be >= 3 (leave-one-out needs 3 items)")
    if data_config.max_window < 2:
        raise DataError("config.data.max_window must be >= 2")
    if data_config.num_negatives < 1:
        raise DataError("config.data.num_negatives must be >= 1")


def build(data_config) -> dict:
    """Reads, filters and splits; returns the keyword arguments of `dataset.save`."""
    _validate(data_config)
    start = time.time()
    raw = readers.read(data_config)
    logging.info("read %d interactions in %.1fs", len(raw), time.time() - start)
    seqs = preprocess.build_sequences(raw, data_config)
    raw_splits = splits.build_splits(
        seqs.sequences, data_config.max_window, tuple(data_config.augment_seeds)
    )
    sample_sets = {}
    for offset, (name, s) in enumerate(raw_splits.items()):
        neg = negatives.sample_negatives(
            s.user,
            s.history,
            s.target,
            seqs.sequences,
            len(seqs.items) - 1,
            data_config.num_negatives,
            seed=[data_config.negative_seed, offset],
            faithful=data_config.faithful_negatives,
        )
        sample_sets[name] = dataset.SampleSet(s.user, s.history, s.target, s.source, neg)
    table = stats.compute_stats(
        seqs.sequences,
        seqs.items,
        {k: len(v) for k, v in sample_sets.items()},
        int((sample_sets["train"].source == splits.SOURCE_RAW).sum()),
        seqs.filter_log,
        sum(raw_id not in raw.item_meta for raw_id in seqs.item_raw_ids[1:]),
    )
    logging.info("prepared %s in %.1fs", data_config.name, time.time() - start)
    return dict(
        data_config=data_config,
        sequences=seqs.sequences,
        user_raw_ids=seqs.user_raw_ids,
        items=seqs.items,
        splits=sample_sets,
        stats=table,
    )


def prepare(data_config, workdir: str | pathlib.Path) -> dataset.ProcessedDataset:
    """Prepares the dataset unless `<workdir>/data` already holds it for this config."""
    target = data_dir(workdir)
    if (target / "manifest.json").is_file():
        manifest = dataset.read_manifest(target)
        dataset.check_config(manifest, data_config, target)
        logging.info("prepare: %s is complete for this config; skipping", target)
        return dataset.load(target, data_config)
    dataset.save(target, **build(data_config))
    return dataset.load(target, data_config)


def run(config, workdir: str | pathlib.Path) -> str:
    """The prepare stage of the pipeline: prepares (or reuses) and returns the statistics table."""
    ds = prepare(config.data, workdir)
    return stats.format_table(ds.stats, ds.name)
