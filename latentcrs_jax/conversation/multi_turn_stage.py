"""The multi-turn pipeline stage: the protocol (multi_turn_protocol.py) on a trained workdir.

Outputs: `<workdir>/eval/multi_turn.json`, `multi_turn.md`, `transcripts/<system>.jsonl`
(multi_turn_results.py), and the stage manifest in `<workdir>/eval/multi_turn/` (with the LLM
simulator's, tracker's, validator's and LLM-only baseline's response caches). Fingerprinted by
the upstream stages' manifests, the `multi_turn` settings, the simulator and text sections and
the EM seed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

from absl import logging

from latentcrs_jax import stage_manifest
from latentcrs_jax.conversation import llm_endpoint, llm_tracker
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.multi_turn import (
    SPEED_ONLY,
    MultiTurnConfigError,
    MultiTurnSettings,
)
from latentcrs_jax.conversation.multi_turn_protocol import EmbeddingMemo, sample_indices
from latentcrs_jax.conversation.multi_turn_results import evaluate, write_outputs
from latentcrs_jax.simulator.state import Utterance


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
        multi_turn={k: v for k, v in dataclasses.asdict(settings).items() if k not in SPEED_ONLY},
        simulator=simulate_stage.fingerprint_section(config.simulator),
        text=encode_stage.fingerprint_section(config.text),
        em_seed=seed,
    )


def preflight(config) -> MultiTurnSettings:
    """Checks `config.multi_turn`, the LLM endpoints and API keys included; no request.

    Cheap, so a pipeline can call it before its first stage and fail at its start rather than
    after training; `run` calls it first.

    Raises:
      MultiTurnConfigError: a bad field, or the LLM tracker or the LLM validator without
        endpoint or model, or an endpoint's key missing.
    """
    settings = MultiTurnSettings.from_config(
        config.multi_turn, mask_history=bool(config.em.mask_history)
    )
    try:
        llm_tracker.make_client(settings.tracker())
        llm_endpoint.make_client(settings.endpoint())
    except (llm_tracker.TrackerConfigError, llm_endpoint.EndpointConfigError) as e:
        raise MultiTurnConfigError(str(e)) from e
    return settings


def _first_turn_usage(simulator: Any, utt: Utterance, history, target: int) -> Utterance:
    """The first turn with its tokens: as recorded by the simulate stage, else counted."""
    if getattr(simulator, "client", None) is None or utt.usage is not None:
        return utt
    messages = simulator.first_turn_messages(history, int(target))
    return dataclasses.replace(utt, usage=simulator.client.counter.count(messages, utt.text))


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
    endpoint = settings.endpoint()
    validator_client = None
    if settings.validator == "llm" and "latentcrs_v" in settings.systems:
        validator_client = llm_endpoint.make_client(endpoint, out / "validator_cache.jsonl")
    llm_only_client = None
    if "llm_only" in settings.systems:
        llm_only_client = llm_endpoint.make_client(endpoint, out / "llm_only_cache.jsonl")
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
    validator = None
    if validator_client is not None:
        validator = validator_lib.LLMValidator(ds.items, ds.domain, validator_client)
    elif "latentcrs_v" in settings.systems:
        item_text = getattr(ctx, "item_text_emb", None)
        if item_text is None:
            logging.warning("multi-turn: no item-text embeddings for the stand-in validator")
        else:
            validator = validator_lib.StandInValidator(
                memo, item_text, settings.validator_standin_weight
            )
    llm_only = None
    if llm_only_client is not None:
        llm_only = llm_rec_lib.LLMRecommender(
            ds.items, ds.domain, llm_only_client, settings.llm_only_titles
        )
    firsts = [
        _first_turn_usage(simulator, utterances[i], test.history[i], test.target[i]) for i in idx
    ]
    start = time.perf_counter()
    results, dialogues = evaluate(
        systems,
        test.history[idx],
        test.target[idx],
        [ds.sample_key("test", i) for i in idx],
        firsts,
        simulator,
        ds.items,
        ds.domain,
        settings,
        prefetch=memo.prefetch,
        tracker=tracker,
        validator=validator,
        llm_recommender=llm_only,
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
    if validator is not None:
        extra["validator"] = {"kind": validator.kind, **validator.summary()}
        logging.info("multi-turn validator: %s", extra["validator"])
    if llm_only is not None:
        extra["llm_only"] = llm_only.summary()
        logging.info("multi-turn LLM-only baseline: %s", extra["llm_only"])
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
