"""The simulate stage: the first-turn utterance x_u of every sample, into `<workdir>/utterances`.

Writes `<split>.jsonl` (one `Utterance.to_dict()` per sample, in sample order, plus its key)
and a manifest fingerprinted by the dataset's content hash and `config.simulator`; a finished
stage is skipped. The LLM path keeps its append-only response cache in the same folder, so an
interrupted run resumes without repeating calls.
"""

import dataclasses
import json
import pathlib

from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.data import dataset as dataset_lib
from latentcrs_jax.data import prepare as prepare_lib
from latentcrs_jax.simulator import api
from latentcrs_jax.simulator.state import Utterance


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir) / "utterances"


# Fields that change how fast or how patiently the endpoint is called, never what it answers.
SPEED_ONLY = ("llm_max_concurrency", "llm_timeout_s", "llm_max_retries", "llm_api_key_env")
# Fields that only change how tokens are counted (added later: hashed only when set).
COUNT_ONLY = {"llm_tokenizer": ""}


def fingerprint_section(simulator) -> dict:
    """`config.simulator` as it determines the utterances: the speed-only fields, and every
    llm_* field when the template simulator (which never reads them) is used, are hashed at
    their defaults, so changing them keeps finished stages (and older workdirs keep theirs)."""
    defaults = dataclasses.asdict(api.SimulatorConfig())
    fixed = {k: defaults[k] for k in SPEED_ONLY}
    if simulator.kind == "template":
        fixed = {k: v for k, v in defaults.items() if k.startswith("llm_")}
    fixed |= COUNT_ONLY
    return stage_manifest.section(simulator, neutral=COUNT_ONLY, fixed=fixed)


def _fingerprint(config, workdir) -> str:
    manifest = dataset_lib.read_manifest(prepare_lib.data_dir(workdir))
    return stage_manifest.fingerprint(
        data=manifest["content_hash"], simulator=fingerprint_section(config.simulator)
    )


def run(config, workdir: str | pathlib.Path) -> str:
    """Simulates every split unless already done; returns a one-paragraph summary."""
    out = stage_dir(workdir)
    fp = _fingerprint(config, workdir)
    if stage_manifest.is_complete(out, fp):
        logging.info("simulate: %s is complete; skipping", out)
        return _summary(stage_manifest.read(out)["stats"])
    ds = dataset_lib.load(prepare_lib.data_dir(workdir), config.data)
    stats = {}
    for split, samples in ds.splits.items():
        keys = [ds.sample_key(split, i) for i in range(len(samples))]
        utts = api.simulate_first_turns(
            samples.history,
            samples.target,
            keys,
            ds.items,
            ds.domain,
            config.simulator,
            cache_path=out / "llm_cache.jsonl",
        )
        lines = [
            json.dumps({"key": k, **u.to_dict()}, ensure_ascii=False) for k, u in zip(keys, utts)
        ]
        fileio.write_text(out / f"{split}.jsonl", "\n".join(lines) + "\n")
        stats[split] = api.utterance_stats(utts)
        logging.info("simulate %s: %s", split, stats[split])
    stage_manifest.write(out, fp, stats=stats)
    return _summary(stats)


def _summary(stats: dict) -> str:
    rows = [f"{split}: {json.dumps(s, sort_keys=True)}" for split, s in stats.items()]
    return "utterances\n" + "\n".join(rows)


def load_utterances(workdir: str | pathlib.Path, split: str) -> list[Utterance]:
    """The utterances of one split, in sample order (raises if the stage has not run)."""
    path = stage_dir(workdir) / f"{split}.jsonl"
    if stage_manifest.read(stage_dir(workdir)) is None:
        raise FileNotFoundError(f"{path}: run the simulate stage first (launch/simulate.py)")
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [Utterance.from_dict({k: v for k, v in r.items() if k != "key"}) for r in rows]


def load_texts(workdir: str | pathlib.Path, split: str) -> list[str]:
    """Just the utterance texts of one split."""
    return [u.text for u in load_utterances(workdir, split)]
