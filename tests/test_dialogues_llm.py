"""The LLM rows of the human-dialogue evaluation: LatentCRS^V with the LLM validator, and the
zero-shot LLM-only baseline, on the loopback fake endpoint with hand-made contexts."""

import json

import dialogue_helpers as H
import numpy as np
import pytest

from latentcrs_jax.conversation import llm_recommender as lr
from latentcrs_jax.conversation import validator as va
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.llm_endpoint import EndpointSettings
from latentcrs_jax.dialogues import evaluate as ev
from latentcrs_jax.dialogues import protocol
from latentcrs_jax.dialogues import stage as dialogues_stage
from latentcrs_jax.dialogues.readers import RECOMMENDER, SEEKER
from latentcrs_jax.evaluation.recommenders import Recommender
from latentcrs_jax.simulator.chat_client import ChatClient

ITEMS = H.catalogue()
ID = H.item_id
MATRIX, BLADE, INCEPTION, HEAT = ID("Matrix, The"), ID("Blade Runner"), ID("Inception"), ID("Heat")


def _contexts():
    turns = ((SEEKER, "I loved Alien, any sci-fi?"), (RECOMMENDER, "Have you seen Aliens?"))
    return [
        protocol.Context("a", 2, "sci-fi please", (), (MATRIX,), (True,), turns=turns),
        protocol.Context("b", 2, "sci-fi please", (MATRIX,), (BLADE,), (False,), turns=turns),
        protocol.Context("c", 2, "sci-fi please", (), (HEAT,), (False,), turns=turns),
    ]


def _client(url, cache=None):
    config = EndpointSettings(base_url=url, model="m", api_key_env="").chat_config()
    return ChatClient(config, cache_path=cache, sleep=lambda s: None)


def _ascending(histories, texts):
    """Item i scores -i: item 1 (The Matrix) first, then Blade Runner, Inception, ..."""
    return np.tile(-np.arange(len(ITEMS), dtype=np.float32), (len(texts), 1))


def _script(n, body):
    prompt = body["messages"][0]["content"]
    if '{"titles":' in prompt:  # LLM-only: two catalogue films and one that does not exist.
        return ("ok", json.dumps({"titles": ["The Matrix (1999)", "Blade Runner", "Nope (1900)"]}))
    return ("ok", json.dumps({"ranking": ["Inception", "Blade Runner"]}))  # The validator.


def _evaluate(url, cache=None):
    validator = va.LLMValidator(ITEMS, "movies", _client(url, cache and cache / "v.jsonl"))
    llm_only = lr.LLMRecommender(ITEMS, "movies", _client(url, cache and cache / "o.jsonl"))
    results, _ = ev.evaluate(
        {"latentcrs": Recommender("latentcrs", _ascending)},
        _contexts(),
        history_len=2,
        vocab=FeatureVocab(ITEMS, "movies"),
        batch_size=2,
        candidates=10,
        validator=validator,
        validator_candidates=3,
        llm_recommender=llm_only,
    )
    return results, validator, llm_only


def test_llm_only_row_ranks_the_named_titles(serve):
    server = serve(_script)
    results, _, llm_only = _evaluate(server.url)
    assert list(results) == ["latentcrs_f", "latentcrs_v", "latentcrs", "llm_only"]
    row = results["llm_only"]
    # The list is [Matrix, Blade Runner]. Masked: context b drops Matrix (its history), so Blade
    # Runner is first; Heat is never named (a miss).
    assert row["masked"] == pytest.approx(
        {"targets": 3, "recall@1": 2 / 3, "recall@10": 2 / 3, "recall@50": 2 / 3, "ndcg@10": 2 / 3}
    )
    unmasked_ndcg = (1 + 1 / np.log2(3)) / 3
    assert row["unmasked"] == pytest.approx(
        {"targets": 3, "recall@1": 1 / 3, "recall@10": 2 / 3, "recall@50": 2 / 3,
         "ndcg@10": unmasked_ndcg}
    )  # fmt: skip
    assert row["masked_strict"]["targets"] == 1 and row["masked_strict"]["recall@1"] == 1.0
    summary = llm_only.summary()
    assert (summary["titles"], summary["unresolved"]) == (9, 3)


def test_llm_validator_reorders_the_filtered_top_and_reads_the_roles(serve):
    server = serve(_script)
    results, validator, _ = _evaluate(server.url)
    # ^F's top 3 (no stated features, history masked) is [1, 2, 3] for a and c and [2, 3, 4]
    # for b; the reply puts Inception (3) first, then Blade Runner (2).
    f, v = results["latentcrs_f"]["masked"], results["latentcrs_v"]["masked"]
    assert f["recall@1"] == pytest.approx(2 / 3)  # Matrix first for a, Blade Runner first for b.
    assert v["recall@1"] == 0.0  # Inception first everywhere.
    assert v["ndcg@10"] == pytest.approx((1 / np.log2(4) + 1 / np.log2(3)) / 3)
    prompts = [b["messages"][0]["content"] for b in server.requests if '{"titles":' not in (
        b["messages"][0]["content"])]  # fmt: skip
    assert prompts and all(
        "user: I loved Alien, any sci-fi?" in p and "assistant: Have you seen Aliens?" in p
        for p in prompts
    )
    assert validator.summary()["parsed"] == validator.summary()["calls"] > 0


def test_a_rerun_from_the_caches_sends_nothing(serve, tmp_path):
    server = serve(_script)
    first, _, _ = _evaluate(server.url, tmp_path)
    sent = len(server.requests)
    again, validator, llm_only = _evaluate(server.url, tmp_path)
    assert sent > 0 and len(server.requests) == sent
    assert again == first
    assert validator.client.usage_total.calls > 0 and llm_only.client.requests_made == 0


def test_rows_show_the_model_in_their_labels():
    results = {"latentcrs_v": {v: {"targets": 1} for v in ("masked", "masked_strict")}}
    for row in results.values():
        for key in row:
            row[key].update({m: 0.5 for m in ("recall@1", "recall@10", "recall@50", "ndcg@10")})
    md = dialogues_stage.to_markdown(results, "masked", {"latentcrs_v": "LatentCRS^V (LLM m)"})
    assert "| LatentCRS^V (LLM m) | 0.5000 |" in md
    assert ev.LABELS["latentcrs_v"] not in md
