"""Tests of the LLM simulator, its chat client and the paper's prompt, against a local server.

The server speaks the OpenAI chat-completions protocol on 127.0.0.1 (a free port, in a thread)
and follows a per-test script: answer, fail with 500/429, hang past the client timeout, or
return a reply that names the target. It counts requests and concurrent requests.
"""

import json
import socket

import pytest

from configs import base
from latentcrs_jax.data import items as items_lib
from latentcrs_jax.simulator import LLMSimulator, simulate_first_turns
from latentcrs_jax.simulator.chat_client import (
    ChatClient,
    ChatConfig,
    EndpointError,
    MissingApiKeyError,
    ResponseCache,
)
from latentcrs_jax.simulator.llm import parse_reply
from latentcrs_jax.simulator.prompts import item_info, user_simulator_prompt


def _items():
    make = items_lib.make_item
    return [
        items_lib.pad_item(),
        make("1", "Matrix, The", year=1999, genres=["Action", "Sci-Fi"]),
        make("2", "Toy Story", year=1995, genres=["Animation", "Children", "Comedy"]),
        make("3", "Heat", year=1995, genres=["Action", "Crime", "Thriller"]),
        make("4", "Alien", year=1979, genres=["Horror", "Sci-Fi"]),
    ]


def _client(url, tmp_path=None, sleeps=None, **overrides):
    fields = dict(base_url=url, model="sim-model", api_key_env="", backoff_base_s=0.001)
    fields.update(overrides)
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    cache = tmp_path / "cache.jsonl" if tmp_path is not None else None
    return ChatClient(ChatConfig(**fields), cache_path=cache, sleep=sleep)


def _ok(text="I want a scary sci-fi film."):
    return lambda n, body: ("ok", text)


def test_first_turn_request_and_reply(serve, monkeypatch):
    server = serve(_ok("  User: I'd like a sci-fi action film. <END> "))
    monkeypatch.setenv("SIM_TEST_KEY", "sk-test")
    client = _client(server.url, api_key_env="SIM_TEST_KEY", temperature=0.3, max_tokens=64)
    sim = LLMSimulator(_items(), "movies", client)
    utt = sim.first_turn([0, 2, 3], 1, "k")
    assert utt.text == "I'd like a sci-fi action film." and utt.done and not utt.leaked
    (body,) = server.requests
    assert body["model"] == "sim-model" and body["temperature"] == 0.3 and body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["user"]
    prompt = body["messages"][0]["content"]
    assert "Your history is Toy Story; Heat." in prompt
    assert "Matrix, The, released in 1999, and belonging to the genres of Action, Sci-Fi." in prompt
    assert server.headers[0]["Authorization"] == "Bearer sk-test"


def test_retries_with_exponential_backoff_then_success(serve):
    actions = [("error", 500, None), ("error", 429, None), ("error", 503, None)]
    server = serve(lambda n, body: actions[n] if n < len(actions) else ("ok", "fine"))
    sleeps = []
    client = _client(server.url, sleeps=sleeps, backoff_base_s=0.01, seed=7)
    assert client.complete([{"role": "user", "content": "hi"}]) == "fine"
    assert len(server.requests) == 4 and client.requests_made == 4
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):  # base * 2**attempt + jitter in [0, base].
        assert 0.01 * 2**attempt <= delay <= 0.01 * 2**attempt + 0.01
    # The jitter comes from a seeded RNG: the same seed gives the same delays.
    server2 = serve(lambda n, body: actions[n] if n < len(actions) else ("ok", "fine"))
    sleeps2 = []
    _client(server2.url, sleeps=sleeps2, backoff_base_s=0.01, seed=7).complete(
        [{"role": "user", "content": "hi"}]
    )
    assert sleeps2 == sleeps


def test_retry_after_header_is_honoured_and_capped(serve):
    server = serve(lambda n, body: ("error", 429, 5) if n == 0 else ("ok", "x"))
    sleeps = []
    client = _client(server.url, sleeps=sleeps, backoff_max_s=0.5)
    assert client.complete([{"role": "user", "content": "hi"}]) == "x"
    assert sleeps == [0.5]


def test_gives_up_after_max_retries_naming_the_url(serve):
    server = serve(lambda n, body: ("error", 500, None))
    client = _client(server.url, max_retries=2)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1.*/chat/completions.*3 attempts.*500"):
        client.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3


def test_client_errors_are_not_retried(serve):
    server = serve(lambda n, body: ("error", 400, None))
    with pytest.raises(EndpointError, match="HTTP 400"):
        _client(server.url).complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1


def test_malformed_replies_are_retried(serve):
    server = serve(lambda n, body: ("garbage",) if n == 0 else ("ok", "good"))
    assert _client(server.url).complete([{"role": "user", "content": "hi"}]) == "good"
    assert len(server.requests) == 2


def test_unreachable_endpoint_names_the_url():
    with socket.socket() as s:  # A port nothing listens on.
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(EndpointError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions"):
        client.complete([{"role": "user", "content": "hi"}])


def test_timeout_then_retry(serve):
    server = serve(lambda n, body: ("hang", 5.0) if n == 0 else ("ok", "after timeout"))
    client = _client(server.url, timeout_s=0.2)
    # Only a client that gave up on the hanging first request gets the second reply.
    assert client.complete([{"role": "user", "content": "hi"}]) == "after timeout"
    assert len(server.requests) == 2


def test_api_key_rules(monkeypatch):
    monkeypatch.delenv("SIM_MISSING_KEY", raising=False)
    cfg = ChatConfig(
        base_url="https://api.example.com/v1", model="m", api_key_env="SIM_MISSING_KEY"
    )
    with pytest.raises(MissingApiKeyError, match="SIM_MISSING_KEY"):
        ChatClient(cfg)
    # Local servers need no key; an empty variable name never sends one.
    local = ChatClient(
        ChatConfig(base_url="http://localhost:8000/v1", model="m", api_key_env="SIM_MISSING_KEY")
    )
    assert local.api_key is None
    with pytest.raises(ValueError, match="llm_base_url"):
        ChatClient(ChatConfig(base_url="", model="m"))
    with pytest.raises(ValueError, match="llm_model"):
        ChatClient(ChatConfig(base_url="http://localhost/v1", model=""))


def test_cache_resumes_without_requests_and_tolerates_a_truncated_line(serve, tmp_path):
    server = serve(lambda n, body: ("ok", f"reply to {body['messages'][0]['content'][-12:]}"))
    items = _items()
    histories = [[0, 2], [0, 3], [2, 4], [3, 4]]
    targets = [1, 1, 3, 2]
    keys = ["a", "b", "c", "d"]
    sim = LLMSimulator(items, "movies", _client(server.url, tmp_path))
    first = [u.text for u in sim.first_turns(histories, targets, keys)]
    assert len(server.requests) == 4
    # A second run makes zero requests and gives the same utterances.
    sim2 = LLMSimulator(items, "movies", _client(server.url, tmp_path))
    assert [u.text for u in sim2.first_turns(histories, targets, keys)] == first
    assert len(server.requests) == 4 and sim2.client.cache_hits == 4
    # A crash mid-write leaves a truncated last line: it is skipped and re-requested.
    path = tmp_path / "cache.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    sim3 = LLMSimulator(items, "movies", _client(server.url, tmp_path))
    assert len(sim3.client.cache) == 3
    assert [u.text for u in sim3.first_turns(histories, targets, keys)] == first
    assert len(server.requests) == 5
    # The appended record starts on a fresh line, so everything parses again.
    cache = ResponseCache(path)
    assert len(cache) == 4


def test_bounded_concurrency(serve):
    server = serve(_ok(), work_s=0.05)
    client = _client(server.url, max_concurrency=3)
    sim = LLMSimulator(_items(), "movies", client)
    n = 12
    utts = sim.first_turns(
        [[0, i % 4 + 1] for i in range(n)],
        [1 + i % 4 for i in range(n)],
        [str(i) for i in range(n)],
    )
    assert len(utts) == n and len(server.requests) == n  # No cache: one request per sample.
    assert 2 <= server.max_in_flight <= 3


def test_leaking_reply_is_retried_then_flagged(serve):
    server = serve(_ok("Honestly, I just want The Matrix."))
    sim = LLMSimulator(_items(), "movies", _client(server.url), leak_retries=2)
    utt = sim.first_turn([0, 2], 1)
    assert utt.leaked and utt.text == "Honestly, I just want The Matrix."
    assert len(server.requests) == 3
    retry_prompts = [r["messages"][0]["content"] for r in server.requests[1:]]
    assert all('"matrix"' in p and "Reminder" in p for p in retry_prompts)
    assert retry_prompts[0] != retry_prompts[1]  # New requests, new cache entries.


def test_leak_retry_recovers(serve):
    replies = ["Play The Matrix for me.", "Something with sci-fi action, from 1999."]
    server = serve(lambda n, body: ("ok", replies[min(n, 1)]))
    sim = LLMSimulator(_items(), "movies", _client(server.url), leak_retries=2)
    utt = sim.first_turn([0, 2], 1)
    assert not utt.leaked and utt.text == replies[1] and len(server.requests) == 2


def test_later_turns_use_the_role_swapped_dialogue(serve):
    server = serve(
        lambda n, body: (
            "ok",
            ["I want sci-fi.", "Not those, older please.", "Yes, that one! <END>"][n],
        )
    )
    sim = LLMSimulator(_items(), "movies", _client(server.url))
    state, first = sim.start([0, 2], 1, "dlg")
    state, reply = sim.respond(state, [3, 4])
    assert reply.text == "Not those, older please." and not reply.accepted and not state.done
    roles = [m["role"] for m in server.requests[1]["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert server.requests[1]["messages"][1]["content"] == "I want sci-fi."
    assert server.requests[1]["messages"][2]["content"] == (
        "The recommended items are: 1 Heat 2 Alien"
    )
    state, reply = sim.respond(state, [4, 1], system_text="We infer you like :Sci-Fi. Try these.")
    assert reply.accepted and reply.done and state.done and reply.text == "Yes, that one!"
    assert [m["role"] for m in server.requests[2]["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert server.requests[2]["messages"][-1]["content"].startswith("We infer you like")
    with pytest.raises(ValueError, match="already finished"):
        sim.respond(state, [1])


def test_simulate_first_turns_picks_the_llm_from_config(serve, tmp_path):
    server = serve(_ok("A nineties thriller, please."))
    section = base.get_simulator_config()
    section.kind = "llm"
    section.llm_base_url = server.url
    section.llm_model = "m"
    section.llm_api_key_env = ""
    utts = simulate_first_turns(
        [[0, 2], [2, 4]],
        [1, 3],
        ["x", "y"],
        _items(),
        "movies",
        section,
        cache_path=tmp_path / "c.jsonl",
    )
    assert [u.text for u in utts] == ["A nineties thriller, please."] * 2
    assert (tmp_path / "c.jsonl").read_text().count("\n") == 2


def test_prompt_follows_the_paper():
    items = _items()
    prompt = user_simulator_prompt(["Toy Story", "Heat"], items[1], "movies")
    assert prompt.startswith(
        "You are a user chatting with a recommender for movies recommendation."
    )
    assert prompt.lower().count("never directly tell the target item title") == 3
    assert "Less than 3 conditions is better" in prompt
    assert "Only output what the user says" in prompt
    assert '"<END>"' in prompt
    assert prompt.rstrip().endswith("Now lets start, you first, act as a user.")
    for placeholder in ("{item_kind}", "{history}", "{target}", "{target_item_info}"):
        assert placeholder not in prompt
    game = items_lib.make_item(
        "g",
        "Star Quest 0",
        categories=["Video Games", "PlayStation 4", "Games", "Action"],
        description="A action game for PlayStation 4 with online co-op.",
    )
    assert item_info(game, "video games") == (
        "Star Quest 0, belongs to the category of PlayStation 4, Games, Action, and the "
        "description is A action game for PlayStation 4 with online co-op."
    )
    assert "recommender for Video Games recommendation" in user_simulator_prompt(
        [], game, "video games"
    )
    assert "recommender for CDs recommendation" in user_simulator_prompt([], game, "CDs")


def test_parse_reply():
    assert parse_reply("Great, thanks! <END>") == ("Great, thanks!", True)
    assert parse_reply("User: hello\nthere") == ("hello there", False)
    assert parse_reply("done ⟨END⟩") == ("done", True)
    assert parse_reply("") == ("", False)


def test_complete_many_sends_identical_requests_once_and_keeps_order(serve):
    server = serve(lambda n, body: ("ok", body["messages"][0]["content"].upper()))
    client = _client(server.url, max_concurrency=2)
    batch = [[{"role": "user", "content": c}] for c in ["a", "b", "a", "c", "b"]]
    assert client.complete_many(batch) == ["A", "B", "A", "C", "B"]
    assert len(server.requests) == 3


def test_utterances_carry_the_tokens_of_every_call_behind_them(serve, tmp_path):
    from latentcrs_jax.simulator.api import utterance_stats
    from latentcrs_jax.simulator.state import Utterance
    from latentcrs_jax.simulator.tokens import TokenUsage

    replies = ["Play The Matrix for me.", "Something with sci-fi action, from 1999."]
    server = serve(
        lambda n, body: (
            "ok",
            replies[min(n, 1)],
            {"prompt_tokens": 300 + n, "completion_tokens": 9},
        )
    )
    sim = LLMSimulator(_items(), "movies", _client(server.url, tmp_path), leak_retries=2)
    utt = sim.first_turn([0, 2], 1)  # A leaking reply, then a clean one: both calls count.
    assert utt.usage == TokenUsage(2, 601, 18, reported=2)
    assert Utterance.from_dict(json.loads(json.dumps(utt.to_dict()))) == utt
    assert "usage" not in Utterance("hi").to_dict()  # Templates: the saved format is unchanged.
    stats = utterance_stats([utt, Utterance("hi")])
    assert (stats["llm_calls"], stats["prompt_tokens"], stats["completion_tokens"]) == (2, 601, 18)
    assert "llm_calls" not in utterance_stats([Utterance("hi")])
    # From the cache: no request, the same tokens.
    again = LLMSimulator(_items(), "movies", _client(server.url, tmp_path), leak_retries=2)
    assert again.first_turn([0, 2], 1).usage == utt.usage and len(server.requests) == 2
