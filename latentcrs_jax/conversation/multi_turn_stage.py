"""The multi-turn pipeline stage: the protocol (multi_turn_protocol.py) on a trained workdir.

Outputs: `<workdir>/eval/multi_turn.json`, `multi_turn.md`, `transcripts/<system>.jsonl`
(multi_turn_output.py), and the stage manifest in `<workdir>/eval/multi_turn/` (with the LLM
simulator's and the LLM tracker's response caches). Fingerprinted by the upstream stages'
manifests, the `multi_turn` settings, the simulator and text sections and the EM seed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

from absl import logging

from latentcrs_jax import stage_manifest
from latentcrs_jax.conversation import llm_tracker
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.multi_turn import MultiTurnConfigError, MultiTurnSettings
from latentcrs_jax.conversation.multi_turn_output import write_outputs
from latentcrs_jax.conversation.multi_turn_protocol import (
    EmbeddingMemo,
    evaluate,
    sample_indices,
)


def stage_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    """Where the stage keeps its manifest (and the LLM simulator's response cache)."""
    return pathlib.Path(workdir) / "eval" / "multi_turn"


def _fingerprint(config, workdir: pathlib.Path, settings: MultiTurnSettings) -> str:
    from latentcrs_jax.data import prepare as prepare_lib
    from latentcrs_jax.simulator import stage as simulate_stage
    from latentcrs_jax.text import stage as encode_stage
    from latentcrs_jax.training import em_stage
    from latentcrs_jax.training.pretrain import stage as pretrain_stage

    seed = config.em_seeds[0]
    dirs = {
        "data": prepare_lib.data_dir(workdir),
        "utterances": simulate_stage.stage_dir(workdir),
        "embeddings": encode_stage.stage_dir(workdir),
        "pretrain": pretrain_stage.stage_dir(workdir),
        "em": em_stage.stage_dir(workdir) / f"seed{seed}" / "em",
        "fusion": em_stage.stage_dir(workdir) / f"seed{seed}" / "fusion",
    }
    upstream = {
        name: (stage_manifest.content_hash(d) if stage_manifest.read(d) is not None else None)
        for name, d in dirs.items()
    }
    return stage_manifest.fingerprint(
        upstream=upstream,
        multi_turn=dataclasses.asdict(settings),
        simulator=simulate_stage.fingerprint_section(config.simulator),
        text=encode_stage.fingerprint_section(config.text),
        em_seed=seed,
    )


def preflight(config) -> MultiTurnSettings:
    """Checks `config.multi_turn`, the LLM tracker's endpoint and API key included; no request.

    Cheap, so a pipeline can call it before its first stage and fail at its start rather than
    after training; `run` calls it first.

    Raises:
      MultiTurnConfigError: a bad field, or the LLM tracker without endpoint, model or key.
    """
    settings = MultiTurnSettings.from_config(
        config.multi_turn, mask_history=bool(config.em.mask_history)
    )
    try:
        llm_tracker.make_client(settings.tracker())
    except llm_tracker.TrackerConfigError as e:
        raise MultiTurnConfigError(str(e)) from e
    return settings


def run(config, workdir: str | pathlib.Path) -> str:
    """The multi-turn stage of a trained workdir; skipped when its manifest is complete.

    Returns:
      A header line and the Markdown table (also in `<workdir>/eval/multi_turn.md`).
    """
    from latentcrs_jax.evaluation import recommenders as recommenders_lib
    from latentcrs_jax.simulator import api as simulator_api
    from latentcrs_jax.simulator import stage as simulate_stage

    workdir = pathlib.Path(workdir)
    settings = preflight(config)
    out = stage_dir(workdir)
    fp = _fingerprint(config, workdir, settings)
    md_path = workdir / "eval" / "multi_turn.md"
    if stage_manifest.is_complete(out, fp) and md_path.is_file():
        logging.info("multi-turn: %s is complete; skipping", out)
        return md_path.read_text(encoding="utf-8").rstrip("\n")
    tracker_settings = settings.tracker()
    client = llm_tracker.make_client(tracker_settings, out / "tracker_cache.jsonl")
    systems, ctx = recommenders_lib.load_systems(config, workdir, wrap_embed=EmbeddingMemo)
    memo = ctx.embed  # Every system embeds through this one memo.
    ds = ctx.dataset
    test = ds.splits["test"]
    if len(test) == 0:
        raise MultiTurnConfigError(f"{workdir}: the test split is empty")
    idx = sample_indices(len(test), settings.num_samples, settings.sample_seed)
    utterances = simulate_stage.load_utterances(workdir, "test")
    simulator = simulator_api.make_simulator(
        config.simulator, ds.items, ds.domain, cache_path=out / "llm_cache.jsonl"
    )
    tracker = None
    if client is not None:
        vocab = FeatureVocab(ds.items, ds.domain)
        tracker = llm_tracker.make_tracker(tracker_settings, vocab, ds.domain, client=client)
    start = time.perf_counter()
    results, dialogues = evaluate(
        systems,
        test.history[idx],
        test.target[idx],
        [ds.sample_key("test", i) for i in idx],
        [utterances[i] for i in idx],
        simulator,
        ds.items,
        ds.domain,
        settings,
        prefetch=memo.prefetch,
        tracker=tracker,
    )
    seconds = time.perf_counter() - start
    for rows in dialogues.values():  # Positions -> test-split indices.
        for t in rows:
            t.sample_index = idx[t.sample_index]
    kind = str(config.simulator.kind)
    tracker_name = "rules" if tracker is None else f"LLM ({tracker_settings.model})"
    header = (
        f"Multi-turn results ({len(idx)} test samples, {settings.rounds} rounds, top-"
        f"{settings.top_k} shown, {kind} simulator, {tracker_name} state tracker, ranking "
        f"text: {settings.ranking_text}; {seconds:.0f}s)"
    )
    extra = {"samples": idx, "seconds": seconds, "simulator": kind}
    if tracker is not None:
        extra["state_tracker"] = tracker.summary()
        logging.info("multi-turn state tracker: %s", extra["state_tracker"])
    md = write_outputs(
        workdir / "eval",
        results,
        dialogues,
        settings,
        header,
        extra=extra,
    )
    stage_manifest.write(out, fp, seconds=seconds, systems=list(results))
    logging.info("multi-turn: %d samples, %d systems in %.1fs", len(idx), len(results), seconds)
    return md
