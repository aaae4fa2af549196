"""The LLM rows of the multi-turn table (LatentCRS^V, LLM-only) and the token-cost table.

Scripted dialogues check what ^V and the LLM-only baseline show each round and what each role
costs; the stage on the tiny data, with every role on the fake endpoint, checks the full cost
table (non-zero for every role) and that a re-run from the caches sends nothing.
"""

import json
import re
import types

import numpy as np
import pytest

from latentcrs_jax.conversation import costs, multi_turn, multi_turn_results, multi_turn_stage
from latentcrs_jax.conversation import llm_recommender as lr
from latentcrs_jax.conversation import validator as va
from latentcrs_jax.conversation.llm_endpoint import EndpointSettings
from latentcrs_jax.data.items import make_item
from latentcrs_jax.evaluation.recommenders import Recommender
from latentcrs_jax.simulator.chat_client import ChatClient
from latentcrs_jax.simulator.state import Utterance
from latentcrs_jax.simulator.tokens import TokenUsage

NUM_ITEMS = 12


def _items():
    items = [make_item("", "")]
    for i in range(1, NUM_ITEMS + 1):
        items.append(make_item(str(i), f"Film {chr(64 + i) * 2}", year=1990 + i, genres=["Drama"]))
    return items


def _rank(histories, texts):
    """Item i scores -i: item 1 first."""
    return np.tile(-np.arange(NUM_ITEMS + 1, dtype=np.float32), (len(texts), 1))


class _Simulator:
    """Says "no, something else" and records what it was shown."""

    def __init__(self):
        self.calls = []

    def respond_many(self, states, recommended, system_texts):
        out = []
        for state, rec, text in zip(states, recommended, system_texts):
            self.calls.append((state.sample_key, list(rec)))
            new = state.copy()
            new.rounds += 1
            new.turns.append({"role": "system", "text": text, "items": list(rec)})
            new.turns.append({"role": "user", "text": "no, something else", "items": []})
            out.append((new, Utterance("no, something else")))
        return out


def _client(url, **overrides):
    config = EndpointSettings(base_url=url, model="m", api_key_env="").chat_config()
    for k, v in overrides.items():
        config = type(config)(**{**config.__dict__, k: v})
    return ChatClient(config, sleep=lambda s: None)


def _evaluate(systems, targets, validator=None, llm_recommender=None, **settings):
    cfg = multi_turn.MultiTurnSettings(
        systems=systems, top_k=2, candidates=8, mask_history=False, rounds=3, **settings
    )
    n = len(targets)
    return multi_turn_results.evaluate(
        {"latentcrs": Recommender("latentcrs", _rank)},
        np.zeros((n, 2), np.int32),
        np.array(targets, np.int32),
        [f"s{j}" for j in range(n)],
        [Utterance("hello")] * n,
        _Simulator(),
        _items(),
        "movies",
        cfg,
        validator=validator,
        llm_recommender=llm_recommender,
    )


def test_standin_validator_row_reranks_the_filter_top_n():
    # Item text embeddings: item 6 matches the dialogue best, then 5, ...; the stand-in with
    # w = 0 follows the text alone over ^F's top 4 (items 1-4 in round 1).
    emb = np.zeros((NUM_ITEMS + 1, 2), np.float32)
    for i in range(1, NUM_ITEMS + 1):
        a = abs(i - 6) * 0.2
        emb[i] = [np.cos(a), np.sin(a)]
    embed = lambda texts: np.tile(np.array([[1.0, 0.0]], np.float32), (len(texts), 1))  # noqa: E731
    standin = va.StandInValidator(embed, emb, weight=0.0)
    results, dialogues = _evaluate(
        ("latentcrs_f", "latentcrs_v"), [4, 12], standin, validator_candidates=4
    )
    v = dialogues["latentcrs_v"]
    shown = [[t["items"] for t in d.state.turns if t["role"] == "system"] for d in v]
    # Round 1: ^F's top 4 = 1..4, by text 4, 3, 2, 1. Round 2: ^F pushes 3, 4 back, its top 4
    # = 1, 2, 5, 6: by text 6, 5. Round 3: 1, 2, 7, 8: by text 7, 8.
    assert shown[1] == [[4, 3], [6, 5], [7, 8]]
    assert [d.success_round for d in v] == [1, None]
    assert [d.success_round for d in dialogues["latentcrs_f"]] == [2, None]
    assert results["latentcrs_v"]["label"] == "LatentCRS^V, stand-in validator (no LLM)"
    cost = results["latentcrs_v"]["cost"]
    assert cost["total"] == TokenUsage().to_dict() and cost["tokens_per_dialogue"] == 0.0
    assert cost["roles"]["validator"]["part"] == costs.KEYLESS
    assert cost["roles"]["simulator"]["part"] == costs.KEYLESS
    assert results["latentcrs_f"]["cost"]["roles"]["validator"]["part"] == costs.ABSENT
    md = costs.to_markdown({k: r["cost"] for k, r in results.items()}, {})
    assert "| latentcrs_v | 0 (keyless) | 0 (keyless) | 0 (keyless) | 0 (keyless) | 0.0 |" in md
    assert "| latentcrs_f | 0 (keyless) | 0 (keyless) | - |" in md and "estimated" not in md


def test_llm_validator_row_calls_once_per_open_dialogue_and_counts_tokens(serve):
    def script(n, body):
        text = body["messages"][0]["content"]
        # Name the candidate whose title is "Film EE" (item 5) when listed, else nothing.
        m = re.search(r"^\[(\d+)\] Film EE", text, re.MULTILINE)
        reply = json.dumps({"ranking": [int(m.group(1))] if m else []})
        return ("ok", reply, {"prompt_tokens": 100, "completion_tokens": 5})

    server = serve(script)
    validator = va.LLMValidator(_items(), "movies", _client(server.url))
    results, dialogues = _evaluate(("latentcrs_v",), [5, 12], validator, validator_candidates=6)
    v = dialogues["latentcrs_v"]
    # Round 1: ^F's top 6 = 1..6, item 5 named first.
    assert v[0].state.turns[1]["items"] == [5, 1] and v[0].success_round == 1
    # Sample 1 never succeeds: 3 rounds, one call each (an empty ranking: ^F's order).
    assert [t["items"] for t in v[1].state.turns if t["role"] == "system"] == [
        [5, 1],
        [2, 3],
        [4, 6],
    ]
    # Both dialogues start alike: round 1's request is sent once but counts for each.
    assert len(server.requests) == 3
    cost = results["latentcrs_v"]["cost"]
    val = cost["roles"]["validator"]
    assert (val["calls"], val["prompt"], val["completion"], val["reported"]) == (4, 400, 20, 4)
    assert cost["turns"] == 1 + 3 and cost["tokens_per_turn"] == pytest.approx(420 / 4)
    assert cost["tokens_per_dialogue"] == pytest.approx(210.0)
    assert validator.summary()["parsed"] == 2 and validator.summary()["empty"] == 2
    assert results["latentcrs_v"]["label"] == "LatentCRS^V, LLM validator (m)"


def test_llm_only_row_resolves_titles_and_is_skipped_without_an_endpoint(serve):
    replies = iter(
        [
            '{"titles": ["Film AA (1991)", "Nope (2001)", "Film CC"]}',
            '{"titles": ["Film AA (1991)", "Film CC", "Film DD (1994)"]}',
            "nothing",
        ]
    )
    server = serve(lambda n, body: ("ok", next(replies)))
    rec = lr.LLMRecommender(_items(), "movies", _client(server.url, max_concurrency=1), 3)
    results, dialogues = _evaluate(("llm_only", "latentcrs_f"), [4], llm_recommender=rec)
    d = dialogues["llm_only"][0]
    shown = [t["items"] for t in d.state.turns if t["role"] == "system"]
    # Round 1: AA, CC (Nope is a miss); round 2: DD first (AA and CC were shown): success.
    assert shown == [[1, 3], [4, 1]] and d.success_round == 2
    assert (
        "Conversation:\nuser: hello\nassistant: The recommended items are: 1 Film AA"
        in (server.requests[1]["messages"][0]["content"])
    )
    s = rec.summary()
    assert s["unresolved"] == 1 and s["titles"] == 6
    cost = results["llm_only"]["cost"]
    assert cost["roles"]["tracker"]["part"] == costs.ABSENT
    assert cost["roles"]["recommender"]["part"] == costs.LLM
    assert (
        cost["roles"]["recommender"]["calls"] == 2
        and cost["roles"]["recommender"]["estimated"] == 2
    )
    assert results["llm_only"]["label"] == "LLM only (zero-shot), m"
    results, _ = _evaluate(("llm_only", "latentcrs_f"), [4])
    assert set(results) == {"latentcrs_f"}


def test_settings_of_the_llm_rows(monkeypatch):
    with pytest.raises(
        multi_turn.MultiTurnConfigError, match="llm_base_url and multi_turn.llm_model"
    ):
        multi_turn.MultiTurnSettings(validator="llm")
    with pytest.raises(multi_turn.MultiTurnConfigError, match="validator must be one of"):
        multi_turn.MultiTurnSettings(validator="gpt")
    with pytest.raises(multi_turn.MultiTurnConfigError, match="standin_weight"):
        multi_turn.MultiTurnSettings(validator_standin_weight=2.0)
    with pytest.raises(multi_turn.MultiTurnConfigError, match="validator_candidates"):
        multi_turn.MultiTurnSettings(validator_candidates=0)
    ok = multi_turn.MultiTurnSettings(
        validator="llm", llm_base_url="http://127.0.0.1:1/v1", llm_model="m"
    )
    assert ok.endpoint().temperature == 0.0 and ok.endpoint().configured


# ------------------------------------------------------------------------ the stage, tiny data
@pytest.fixture(scope="module")
def tiny_simulated_workdir(tmp_path_factory):
    from configs import tiny
    from latentcrs_jax import pipeline

    workdir = tmp_path_factory.mktemp("tiny_llm_rows")
    pipeline.run(tiny.get_config(), workdir, until="simulate")
    return workdir


def _endpoint_script(titles):
    """One fake endpoint for every role, told apart by its prompt."""

    def script(n, body):
        first = body["messages"][0]["content"]
        if "conversation_history:" in first:  # The state tracker.
            return ("ok", '{"human intents": ["something good"], "item features": ["Drama"]}')
        if '{"ranking":' in first:  # The validator: the last candidate first.
            return ("ok", json.dumps({"ranking": [first.count("\n[")]}))
        if '{"titles":' in first:  # The LLM-only baseline.
            return ("ok", json.dumps({"titles": titles[n % 7 : n % 7 + 3] + ["Not A Film (1900)"]}))
        return ("ok", "Not those. Something with more drama, please.")  # The user simulator.

    return script


def _usage(body, text):
    return {
        "prompt_tokens": len(json.dumps(body["messages"])) // 4,
        "completion_tokens": len(text) // 4 + 1,
    }


def test_stage_with_every_role_on_the_endpoint_prints_the_full_cost_table(
    serve, tiny_simulated_workdir, monkeypatch
):
    from configs import tiny
    from latentcrs_jax.data import dataset
    from latentcrs_jax.evaluation import recommenders

    workdir = tiny_simulated_workdir
    ds = dataset.load(workdir / "data")
    n = ds.num_items + 1
    titles = [str(it["title"]) for it in ds.items[1:40]]
    server = serve(_endpoint_script(titles), usage=_usage)

    def score(histories, texts):
        return np.tile(np.sin(np.arange(n, dtype=np.float32)), (len(texts), 1))

    def fake_load(config, wd, seed=None, wrap_embed=None):
        embed = lambda texts: np.zeros((len(texts), 2), np.float32)  # noqa: E731
        ctx = types.SimpleNamespace(dataset=ds, embed=wrap_embed(embed), item_text_emb=None)
        return {"latentcrs": Recommender("latentcrs", score)}, ctx

    monkeypatch.setattr(recommenders, "load_systems", fake_load)
    config = tiny.get_config()
    config.simulator.kind, config.simulator.llm_base_url = "llm", server.url
    config.simulator.llm_model, config.simulator.llm_api_key_env = "sim", ""
    mt = config.multi_turn
    mt.num_samples, mt.rounds = 6, 3
    mt.systems = ("latentcrs_f", "latentcrs", "latentcrs_v", "llm_only")
    mt.state_tracker, mt.tracker_base_url, mt.tracker_model = "llm", server.url, "trk"
    mt.validator, mt.llm_base_url, mt.llm_model = "llm", server.url, "val"
    md = multi_turn_stage.run(config, workdir)
    made = len(server.requests)
    out = json.loads((workdir / "eval" / "multi_turn.json").read_text())
    rows = out["systems"]
    assert set(rows) == {"latentcrs_f", "latentcrs", "latentcrs_v", "llm_only"}
    for name, row in rows.items():
        roles = row["cost"]["roles"]
        for role, cell in roles.items():
            if cell["part"] == costs.LLM:
                assert cell["calls"] > 0 and cell["prompt"] > 0 and cell["completion"] > 0, (
                    name,
                    role,
                )
        assert row["cost"]["tokens_per_dialogue"] > 0 and row["cost"]["tokens_per_turn"] > 0
    parts = {
        name: {r: c["part"] for r, c in row["cost"]["roles"].items()} for name, row in rows.items()
    }
    assert parts["latentcrs_v"] == dict.fromkeys(costs.ROLES[:3], costs.LLM) | {
        "recommender": costs.KEYLESS
    }
    assert parts["llm_only"] == {
        "simulator": costs.LLM,
        "tracker": costs.ABSENT,
        "validator": costs.ABSENT,
        "recommender": costs.LLM,
    }
    # Every role has non-zero counts somewhere, all but the first turns from `usage`.
    for role in costs.ROLES:
        assert sum(r["cost"]["roles"][role]["calls"] for r in rows.values()) > 0
    sim = rows["latentcrs_v"]["cost"]["roles"]["simulator"]
    assert sim["estimated"] == 6  # The first turns: the template's text, counted by estimate.
    assert (
        rows["latentcrs_v"]["cost"]["roles"]["validator"]["reported"]
        == rows["latentcrs_v"]["cost"]["roles"]["validator"]["calls"]
    )
    assert out["llm_only"]["unresolved"] >= out["llm_only"]["calls"]  # One miss per reply.
    assert "Token cost per dialogue" in md and "LatentCRS^V, LLM validator (val)" in md
    assert "LLM only (zero-shot), val" in md
    table = md.split("Token cost per dialogue")[1]
    assert "0 (keyless)" in table and "calls)" in table
    # Re-run (outputs removed, same fingerprint): every reply from the caches, same tables.
    (workdir / "eval" / "multi_turn.md").unlink()
    again = multi_turn_stage.run(config, workdir)
    assert len(server.requests) == made
    assert again.split("\n", 1)[1] == md.split("\n", 1)[1]


# ------------------------------------------------------------------------------------- chat
def test_chat_offers_the_validated_and_llm_only_systems(serve):
    from latentcrs_jax.conversation import chat

    replies = ['{"titles": ["Film EE (1995)", "Film AA", "Casablanca"]}']
    server = serve(lambda n, body: ("ok", replies[0]) if n == 0 else ("error", 500, None))
    items = _items()
    emb = np.zeros((NUM_ITEMS + 1, 2), np.float32)
    emb[1:] = [1.0, 0.0]
    emb[3] = [0.0, 1.0]  # Only item 3's text matches the dialogue.
    embed = lambda texts: np.tile(np.array([[0.0, 1.0]], np.float32), (len(texts), 1))  # noqa: E731
    session = chat.ChatSession(
        {"latentcrs": Recommender("latentcrs", _rank)},
        items,
        "movies",
        settings=chat.ChatSettings(top_k=2, validator_candidates=5),
        validator=va.StandInValidator(embed, emb, weight=0.0),
        llm_recommender=lr.LLMRecommender(
            items, "movies", _client(server.url, max_retries=0), num_titles=3
        ),
    )
    assert "latentcrs, latentcrs_v, llm_only" in session.handle("/help")
    assert session.handle("/system latentcrs") == "Now recommending with latentcrs."
    out = session.handle("a drama")
    assert out.splitlines()[1].startswith("  1. Film AA") and "  2. Film BB" in out
    assert "stand-in validator" in session.handle("/system latentcrs_v")
    out = session.handle("another drama")  # ^F: 3, 4, 5, 6, 7 (1, 2 shown); item 3 first.
    assert [line.split(" |")[0] for line in out.splitlines()[1:3]] == [
        "  1. Film CC (1993)",
        "  2. Film DD (1994)",
    ]
    session.handle("/system llm_only")
    out = session.handle("something else")
    assert "not in the catalogue: Casablanca" in out
    assert "1. Film EE (1995)" in out and "2. Film AA (1991)" in out
    out = session.handle("more")  # The endpoint fails: a note, no crash.
    assert out.startswith("(The language model is unreachable")
    assert "/system" in chat.HELP and session.handle("/system gpt").startswith("Unknown system")


def test_stage_stops_at_start_without_the_validator_key(tiny_simulated_workdir, monkeypatch):
    from configs import tiny
    from latentcrs_jax import pipeline
    from latentcrs_jax.evaluation import recommenders

    def fail(*args, **kwargs):
        raise AssertionError("load_systems called before the key check")

    monkeypatch.setattr(recommenders, "load_systems", fail)
    monkeypatch.delenv("VALIDATOR_TEST_KEY", raising=False)
    config = tiny.get_config()
    mt = config.multi_turn
    mt.validator, mt.llm_base_url, mt.llm_model = "llm", "https://x.example/v1", "m"
    mt.llm_api_key_env = "VALIDATOR_TEST_KEY"
    with pytest.raises(multi_turn.MultiTurnConfigError, match="VALIDATOR_TEST_KEY"):
        multi_turn_stage.run(config, tiny_simulated_workdir)
    with pytest.raises(multi_turn.MultiTurnConfigError, match="VALIDATOR_TEST_KEY"):
        pipeline.run(config, tiny_simulated_workdir / "never")  # Before its first stage.
    assert not (tiny_simulated_workdir / "never").exists()
