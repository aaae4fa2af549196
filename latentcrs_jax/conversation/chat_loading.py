"""Loading a chat session from a trained workdir: the dataset, every system, the intent labels,
the state tracker, the validator and the LLM-only recommender (`chat.ChatSession.from_workdir`).

Kept apart from `chat.py`, which is the session itself (commands, ranking, rendering, no I/O).
"""

from __future__ import annotations

import pathlib

from latentcrs_jax import artifacts
from latentcrs_jax.conversation import chat, llm_endpoint, llm_tracker, multi_turn
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.intent_labels import intent_labels
from latentcrs_jax.evaluation import recommenders as recommenders_lib


def load_session(config, workdir: str | pathlib.Path) -> chat.ChatSession:
    """Loads a trained workdir (dataset, systems, intents) into a session.

    Raises:
        chat.ChatError: the workdir has no trained backbone, or an endpoint is misconfigured.
    """
    workdir = pathlib.Path(workdir)
    mt_settings = multi_turn.MultiTurnSettings.from_config(config.multi_turn)
    tracker_settings = mt_settings.tracker()
    backbone = artifacts.pretrain_dir(workdir)
    if not (backbone / "result.json").is_file():
        raise chat.ChatError(
            f"{workdir} has no trained backbone ({backbone}/result.json): run the pipeline "
            "(python -m launch.run) first"
        )
    client = llm_tracker.make_client(  # A missing key shows before anything loads.
        tracker_settings, workdir / "chat" / "tracker_cache.jsonl"
    )
    try:
        validator_client = None
        if mt_settings.validator == "llm":
            validator_client = llm_endpoint.make_client(
                mt_settings.endpoint(), workdir / "chat" / "validator_cache.jsonl"
            )
        llm_only_client = llm_endpoint.make_client(
            mt_settings.endpoint(), workdir / "chat" / "llm_only_cache.jsonl"
        )
    except llm_endpoint.EndpointConfigError as e:
        raise chat.ChatError(str(e)) from e
    systems, ctx = recommenders_lib.load_systems(config, workdir)
    ds = ctx.dataset
    vocab = FeatureVocab(ds.items, ds.domain)
    names, affinity = intent_labels(ctx.intents, ctx.item_emb, ds.items, vocab)
    tracker = llm_tracker.make_tracker(
        tracker_settings, vocab, ds.domain, fallback_on_endpoint_error=True, client=client
    )
    validator = None
    if validator_client is not None:
        validator = validator_lib.LLMValidator(ds.items, ds.domain, validator_client)
    elif ctx.item_text_emb is not None:
        validator = validator_lib.StandInValidator(
            ctx.embed, ctx.item_text_emb, mt_settings.validator_standin_weight
        )
    llm_only = None
    if llm_only_client is not None:
        llm_only = llm_rec_lib.LLMRecommender(
            ds.items, ds.domain, llm_only_client, mt_settings.llm_only_titles
        )
    return chat.ChatSession(
        systems,
        ds.items,
        ds.domain,
        ds.user_raw_ids,
        ds.sequence,
        history_len=int(ds.splits["test"].history.shape[1]),
        settings=chat.ChatSettings(
            mask_history=bool(config.em.mask_history),
            validator_candidates=mt_settings.validator_candidates,
        ),
        intent_names=names,
        intent_affinity=affinity,
        tracker=tracker,
        validator=validator,
        llm_recommender=llm_only,
    )
