"""Checks a pipeline run up front, before any stage does expensive work.

Every check is cheap (no data read, no compilation) and raises a `UserInputError` naming the
config field or the endpoint at fault: the typed settings of every section a stage will read,
the batch sizes against the device count, and each LLM endpoint with one test request.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging

from latentcrs_jax.errors import ConfigError, UserInputError

# The pipeline's stages in order (`pipeline.STAGES` holds their functions).
STAGES = (
    "prepare",
    "simulate",
    "encode",
    "pretrain",
    "train",
    "evaluate",
    "multi_turn",
    "report",
)
# The batch-size fields every device must get an equal share of, per stage that splits them.
BATCH_FIELDS = {
    "pretrain": ("pretrain.batch_size", "pretrain.eval_batch_size", "pretrain.microbatch"),
    "train": ("em.batch_size", "em.eval_batch_size"),
}


def stage_names(until: str | None) -> list[str]:
    """The stages a run up to and including `until` (all when None) covers: `until` and the
    stages it reads (`pipeline.stages_until`)."""
    from latentcrs_jax import pipeline

    return [s.name for s in pipeline.stages_until(until)]


# Fields (by name, in any section) that must be at least 1: sizes, counts, limits, rates.
POSITIVE = frozenset(
    {
        "batch_size",
        "eval_batch_size",
        "max_epochs",
        "patience",
        "num_intents",
        "hidden",
        "num_layers",
        "num_heads",
        "max_len",
        "max_length",
        "text_hidden",
        "n_views",
        "kmeans_iters",
        "kmeans_redo",
        "ce_chunk",
        "query_blocks",
        "rounds",
        "top_k",
        "candidates",
        "num_negatives",
        "validator_candidates",
        "llm_only_titles",
        "tracker_max_prompt_features",
    }
)
# Name endings of fields that must be positive too (the endpoints' call settings).
POSITIVE_SUFFIXES = ("max_concurrency", "max_tokens")
# Fields that must be positive but may be below 1 (and every `*timeout_s`).
POSITIVE_FLOATS = frozenset(
    {"lr", "learning_rate", "temperature", "prior_temperature", "timeout_s"}
)


def _numbers(node: Any, where: str):
    """(dotted name, value) of every number in a config, nested sections and tuples included."""
    if hasattr(node, "items"):
        for key, value in node.items():
            yield from _numbers(value, f"{where}.{key}")
    elif isinstance(node, list | tuple):
        for k, value in enumerate(node):
            yield from _numbers(value, f"{where}[{k}]")
    elif isinstance(node, int | float) and not isinstance(node, bool):
        yield where, node


def check_values(config) -> None:
    """Numbers that no field can hold: nan or inf anywhere, negative values, zero sizes and
    counts, dropouts and probabilities outside [0, 1)."""
    for where, value in _numbers(config, "config"):
        name = where.rsplit(".", 1)[-1]
        if not math.isfinite(value):
            raise ConfigError(f"{where}={value} is not a finite number")
        if value < 0:
            raise ConfigError(f"{where}={value} must be >= 0")
        if (name in POSITIVE or name.endswith(POSITIVE_SUFFIXES)) and value < 1:
            raise ConfigError(f"{where}={value} must be >= 1")
        if (name in POSITIVE_FLOATS or name.endswith("timeout_s")) and value <= 0:
            raise ConfigError(f"{where}={value} must be > 0")
        if (name.endswith("dropout") and value >= 1) or (name.endswith("_prob") and value > 1):
            raise ConfigError(f"{where}={value} must be below 1")


def _section(name: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except UserInputError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ConfigError(f"config.{name}: {e}") from e


def check_sections(config) -> None:
    """Builds the typed settings of every section (unknown fields, bad values)."""
    from latentcrs_jax.conversation import multi_turn_stage
    from latentcrs_jax.simulator import api as simulator_api
    from latentcrs_jax.text import encode
    from latentcrs_jax.training import em
    from latentcrs_jax.training.pretrain.config import model_config_from, pretrain_config_from

    for name in ("data", "backbone", "pretrain", "simulator", "text", "em", "multi_turn"):
        if config.get(name) is None:
            raise ConfigError(f"config.{name}: the section is missing (see configs/base.py)")
    check_values(config)
    if not tuple(config.get("em_seeds") or ()):
        raise ConfigError("config.em_seeds is empty; give at least one seed, e.g. (0,)")
    unknown = sorted(set(config.get("em_plans") or ()) - set(em.PHASE_PLANS))
    if unknown or not tuple(config.get("em_plans") or ()):
        raise ConfigError(
            f"config.em_plans={tuple(config.get('em_plans') or ())}: unknown or none; "
            f"known plans: {sorted(em.PHASE_PLANS)}"
        )
    _section("pretrain", lambda: pretrain_config_from(config.pretrain))
    _section("backbone", lambda: model_config_from(config.backbone, num_items=1))
    _section("em", lambda: em.EMConfig.from_config(config.em))
    _section("simulator", lambda: simulator_api.SimulatorConfig.from_config(config.simulator))
    _section("text", lambda: encode.TextSettings.from_config(config.text))
    _section("multi_turn", lambda: multi_turn_stage.preflight(config))


def check_batch_sizes(config, stages: Sequence[str], device_count: int | None = None) -> None:
    """Every batch size of the given stages must divide by the device count.

    Args:
      config: the experiment config.
      stages: names of the stages that will run.
      device_count: the global device count (default `jax.device_count()`).
    """
    fields = [f for stage in stages for f in BATCH_FIELDS.get(stage, ())]
    if not fields:
        return
    if device_count is None:
        import jax

        device_count = jax.device_count()
    for field in fields:
        section, name = field.split(".")
        value = int(config[section][name])
        whole = not 0 < value < int(config[section].batch_size)
        if name == "microbatch" and whole:  # 0 (or >= batch_size) means the whole batch.
            continue
        if value % device_count:
            raise ConfigError(
                f"config.{field}={value} does not divide by the {device_count} devices; "
                f"choose a multiple of {device_count} (e.g. --config.{field}="
                f"{max(device_count, value // device_count * device_count)})"
            )


def endpoint_clients(config, stages: Sequence[str]) -> list[tuple[str, Any]]:
    """(what, ChatClient) of every LLM endpoint the given stages will call; no request sent."""
    from latentcrs_jax.conversation import llm_endpoint, llm_tracker, multi_turn_stage
    from latentcrs_jax.simulator import api as simulator_api
    from latentcrs_jax.simulator.chat_client import ChatClient

    clients = []
    sim = _section("simulator", lambda: simulator_api.SimulatorConfig.from_config(config.simulator))
    if sim.kind == "llm" and {"simulate", "multi_turn"} & set(stages):
        clients.append(("the LLM simulator", ChatClient(sim.chat_config())))
    if {"evaluate", "multi_turn"} & set(stages):
        settings = multi_turn_stage.preflight(config)
        tracker = llm_tracker.make_client(settings.tracker())
        if tracker is not None and "multi_turn" in stages:
            clients.append(("the LLM state tracker", tracker))
        used = settings.validator == "llm" or "llm_only" in settings.systems
        endpoint = llm_endpoint.make_client(settings.endpoint())
        if endpoint is not None and used:
            clients.append(("the LLM validator / LLM-only baseline", endpoint))
    return clients


def check_endpoints(config, stages: Sequence[str], timeout_s: float = 5.0) -> None:
    """One test request to every LLM endpoint the stages will call (within `timeout_s` each)."""
    for what, client in endpoint_clients(config, stages):
        logging.info("preflight: testing %s at %s", what, client.url)
        try:
            client.probe(timeout_s)
        except UserInputError as e:
            raise type(e)(f"{what}: {e}") from e


def check(config, stages: Sequence[str], endpoints: bool = True) -> None:
    """All checks for a run of `stages` (names as in `pipeline.STAGES`).

    Raises:
      UserInputError: a `ConfigError`, or an endpoint error, naming the field or the URL.
    """
    if endpoints:
        check_endpoints(config, stages)
    check_sections(config)
    check_batch_sizes(config, stages)
