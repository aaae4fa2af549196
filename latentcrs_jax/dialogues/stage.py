"""`run`: a dialogue file against a trained workdir -> `<workdir>/eval/dialogues/<name>.{md,json}`.

Steps: read (streamed) and resolve the mentions onto the workdir's catalogue; build the
protocol's contexts; embed every distinct context once through the workdir's embedding cache
(`embeddings/cache`, keyed by the encoder's model id and the text, so a rerun encodes nothing);
score every system of `load_systems` (plus LatentCRS^F and ^V, and the LLM-only baseline when
`multi_turn.llm_*` names an endpoint) on every context; write the tables. LLM replies are cached
in `eval/dialogues/llm_cache/` (append-only, keyed by the request), so a rerun sends nothing.
Timings: `encode_seconds` (embedding the contexts), per-system scoring seconds, and
`contexts_per_s` = contexts / (scoring seconds of all systems together, after encoding).
"""

from __future__ import annotations

import pathlib
import re
import time
import types
from collections.abc import Mapping
from typing import Any

from absl import logging

from latentcrs_jax import fileio, stage_manifest
from latentcrs_jax.conversation import llm_endpoint, multi_turn, multi_turn_protocol
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.dialogues import evaluate as evaluate_lib
from latentcrs_jax.dialogues import metrics as metrics_lib
from latentcrs_jax.dialogues import protocol, readers
from latentcrs_jax.dialogues.resolve import Resolver
from latentcrs_jax.text import cache as cache_lib
from latentcrs_jax.text import stage as encode_stage


def out_dir(workdir: str | pathlib.Path) -> pathlib.Path:
    return pathlib.Path(workdir) / "eval" / "dialogues"


def _disk_cached(workdir: pathlib.Path):
    """`wrap_embed` for `load_systems`: an in-memory memo over the workdir's embedding cache."""
    manifest = stage_manifest.read(encode_stage.stage_dir(workdir)) or {}
    model_id = str(manifest.get("model_id", ""))

    def wrap(embed):
        if not model_id or model_id.startswith("precomputed:"):
            return multi_turn_protocol.EmbeddingMemo(embed)
        cache = cache_lib.EmbeddingCache(encode_stage.stage_dir(workdir) / "cache", model_id)
        encoder = types.SimpleNamespace(encode=embed)
        return multi_turn_protocol.EmbeddingMemo(
            lambda texts: cache_lib.encode_with_cache(encoder, cache, list(texts))
        )

    return wrap


def _fmt(value: float) -> str:
    return "–" if value != value else f"{value:.4f}"  # NaN: no target in that view.


def to_markdown(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    view: str,
    labels: Mapping[str, str] | None = None,
) -> str:
    """One table: a row per system, all targets then the strict ones, for `view`."""
    labels = {**evaluate_lib.LABELS, **(labels or {})}
    cols = [m.replace("recall", "R").replace("ndcg", "NDCG") for m in metrics_lib.METRICS]
    lines = [
        "| system | " + " | ".join(cols) + " | " + " | ".join(f"strict {c}" for c in cols) + " |",
        "|---|" + "---|" * (2 * len(cols)),
    ]
    for name, row in results.items():
        cells = [_fmt(row[view][m]) for m in metrics_lib.METRICS]
        cells += [_fmt(row[f"{view}_strict"][m]) for m in metrics_lib.METRICS]
        label = labels.get(name, name).replace("|", "\\|")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_lines(out: Mapping[str, Any]) -> list[str]:
    """Coverage and protocol counts as Markdown lines."""
    p, c = out["protocol"], out["coverage"]
    lines = [
        f"{p['dialogues']} dialogues ({out['read']['bad_lines']} bad lines skipped), "
        f"{p['messages']} messages; {p['contexts']} contexts with {p['targets']} targets "
        f"({p['strict_targets']} suggested and liked by the seeker); dialogues without a "
        f"scored recommendation: {p['dialogues_without_context']}.",
        f"Mentions resolved onto the catalogue: {c['resolved']} of {c['mentions']} "
        f"({c['resolved_share']:.1%}; {c['fuzzy']} by a fuzzy guess). Movies in recommendation "
        f"messages: {p['target_mentions']}, unresolved {p['targets_unresolved']}, mentioned "
        f"earlier in the dialogue (not scored) {p['targets_repeated']}.",
    ]
    if c["top_unresolved"]:
        top = "; ".join(f"{t['title']} ({t['count']})" for t in c["top_unresolved"][:10])
        lines.append(f"Most frequent unresolved titles: {top}.")
    return lines


def render(out: Mapping[str, Any]) -> str:
    """The Markdown report of one evaluation."""
    md = [
        f"Human dialogues `{out['name']}` ({out['format']} format), zero-shot: nothing is "
        "trained on them. Full ranking over every item; every target is one sample.",
        "",
        *summary_lines(out),
        "",
        "History masked (the seeker's mentioned movies are never ranked):",
        "",
        to_markdown(out["results"], "masked", out.get("labels")),
        "",
        "History not masked:",
        "",
        to_markdown(out["results"], "unmasked", out.get("labels")),
        "",
        f"Encoding {out['contexts']} contexts: {out['encode_seconds']:.1f}s; scoring them with "
        f"{len(out['results'])} systems: {sum(out['seconds'].values()):.1f}s "
        f"({out['contexts_per_s']:.0f} contexts/s for all systems; the encoder's share of the "
        f"total {out['encoder_share']:.0%}).",
    ]
    for role, row in out.get("llm", {}).items():
        u = row["usage"]
        md.append(
            f"{role}: {u['calls']} calls, {u['prompt']} prompt + {u['completion']} completion "
            f"tokens ({u['estimated']} calls estimated); {row['summary']}."
        )
    return "\n".join(md)


def default_name(path: str | pathlib.Path) -> str:
    """The report name of a dialogue file: its file name without extensions, made file-safe."""
    stem = pathlib.Path(path).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "dialogues"


def _llm_parts(settings, workdir: pathlib.Path, ds, ctx) -> tuple[Any, Any, dict[str, str]]:
    """(validator or None, LLM-only recommender or None, row labels) as the settings ask.

    Raises:
      EndpointConfigError: `validator="llm"` or the LLM-only row without a usable endpoint key.
    """
    cache = out_dir(workdir) / "llm_cache"
    endpoint = settings.endpoint()
    labels: dict[str, str] = {}
    validator = llm_only = None
    if settings.validator == "llm":
        client = llm_endpoint.make_client(endpoint, cache / "validator.jsonl")
        validator = validator_lib.LLMValidator(ds.items, ds.domain, client)
        labels[evaluate_lib.VALIDATED] = f"LatentCRS^V ({validator.label})"
    elif ctx.item_text_emb is not None:
        validator = validator_lib.StandInValidator(
            ctx.embed, ctx.item_text_emb, settings.validator_standin_weight
        )
    if evaluate_lib.LLM_ONLY in settings.systems:
        client = llm_endpoint.make_client(endpoint, cache / "llm_only.jsonl")
        if client is not None:
            llm_only = llm_rec_lib.LLMRecommender(
                ds.items, ds.domain, client, settings.llm_only_titles
            )
            labels[evaluate_lib.LLM_ONLY] = f"LLM only, zero-shot ({client.config.model})"
    return validator, llm_only, labels


def run(
    config,
    workdir: str | pathlib.Path,
    path: str | pathlib.Path,
    fmt: str = "redial",
    movies: str | pathlib.Path | None = None,
    name: str | None = None,
    skip_bad_lines: bool = False,
    batch_size: int = 256,
    max_context_chars: int = protocol.MAX_CONTEXT_CHARS,
) -> tuple[str, dict[str, Any]]:
    """Evaluates a dialogue file; returns (Markdown, the JSON-ready result) and writes both."""
    from latentcrs_jax import artifacts
    from latentcrs_jax.evaluation import recommenders

    workdir = pathlib.Path(workdir)
    backbone = artifacts.pretrain_dir(workdir)
    if not (backbone / "result.json").is_file():
        raise evaluate_lib.DialogueEvalError(
            f"{workdir} has no trained backbone ({backbone}/result.json): run the pipeline "
            "(python -m launch.run) first"
        )
    name = name or default_name(path)
    read_stats = readers.ReadStats()
    dialogues = readers.read(path, fmt, movies, skip_bad_lines, read_stats)
    systems, ctx = recommenders.load_systems(config, workdir, wrap_embed=_disk_cached(workdir))
    ds = ctx.dataset
    vocab = FeatureVocab(ds.items, ds.domain)
    resolver = Resolver(ds.items)
    history_len = int(ds.splits["test"].history.shape[1])
    contexts, stats = protocol.build_contexts(
        dialogues, resolver, vocab, history_len, max_context_chars
    )
    if not contexts:
        raise evaluate_lib.DialogueEvalError(
            f"{path}: no recommendation message mentions a movie that resolves onto the "
            f"catalogue ({resolver.coverage.resolved} of {resolver.coverage.mentions} mentions "
            "resolved): nothing to evaluate"
        )
    settings = multi_turn.MultiTurnSettings.from_config(config.multi_turn)
    validator, llm_only, labels = _llm_parts(settings, workdir, ds, ctx)
    start = time.perf_counter()
    ctx.embed.prefetch([c.text for c in contexts])
    encode_seconds = time.perf_counter() - start
    results, seconds = evaluate_lib.evaluate(
        systems,
        contexts,
        history_len,
        vocab,
        has_title=lambda i: bool(ds.items[i].get("title")),
        batch_size=batch_size,
        candidates=settings.candidates,
        validator=validator,
        validator_candidates=settings.validator_candidates,
        llm_recommender=llm_only,
    )
    scoring = sum(seconds.values())
    out = {
        "name": name,
        "file": str(path),
        "format": fmt,
        "read": {"dialogues": read_stats.dialogues, "bad_lines": read_stats.bad_lines},
        "protocol": stats.to_dict(),
        "coverage": resolver.coverage.to_dict(),
        "contexts": len(contexts),
        "results": results,
        "seconds": seconds,
        "encode_seconds": encode_seconds,
        "contexts_per_s": len(contexts) / max(scoring, 1e-9),
        "encoder_share": encode_seconds / max(encode_seconds + scoring, 1e-9),
        "labels": {n: labels[n] for n in results if n in labels},
        "llm": {
            role: {"usage": part.client.usage_total.to_dict(), "summary": part.summary()}
            for role, part in (("validator", validator), ("llm_only", llm_only))
            if getattr(part, "kind", "") == "llm"
        },
    }
    md = render(out)
    fileio.write_json(out_dir(workdir) / f"{name}.json", out)
    fileio.write_text(out_dir(workdir) / f"{name}.md", md + "\n")
    logging.info("dialogues: wrote %s", out_dir(workdir) / f"{name}.md")
    return md, out
