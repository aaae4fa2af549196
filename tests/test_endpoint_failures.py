"""Endpoint failures against the loopback fake server: each one fails fast, with one message
naming the endpoint and what is wrong, and a failed request stops the rest of its batch.

Cases: connection refused, a timeout, a URL without http://, a missing key, a missing or
unknown model, a server error that outlasts the retries, and the pipeline's preflight.
"""

import socket

import pytest

from configs import tiny
from latentcrs_jax import preflight
from latentcrs_jax.errors import ConfigError, UserInputError
from latentcrs_jax.simulator.chat_client import (
    ChatClient,
    ChatConfig,
    EndpointConfigError,
    EndpointError,
    MissingApiKeyError,
)

HI = [{"role": "user", "content": "hi"}]


def _free_port_url():
    with socket.socket() as s:  # A port nothing listens on once closed.
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def _client(url, sleeps=None, **overrides):
    fields = dict(base_url=url, model="m", api_key_env="", backoff_base_s=0.001)
    fields.update(overrides)
    sleep = sleeps.append if sleeps is not None else (lambda s: None)
    return ChatClient(ChatConfig(**fields), sleep=sleep)


def test_connection_refused_is_final_at_once():
    sleeps = []
    client = _client(_free_port_url(), sleeps, max_retries=5)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:\d+/v1/chat/completions: connection"):
        client.complete(HI)
    assert sleeps == [] and client.requests_made == 1  # No retries, no backoff.
    assert isinstance(EndpointError("x"), UserInputError)  # Binaries print it as one line.


def test_a_failed_request_stops_its_batch(serve):
    server = serve(lambda n, body: ("error", 503, None))
    client = _client(server.url, max_retries=2, max_concurrency=2)
    batch = [[{"role": "user", "content": f"q{k}"}] for k in range(12)]
    with pytest.raises(EndpointError, match="HTTP 503"):
        client.complete_many(batch)
    # At most the two requests in flight spend their 3 attempts; the other 10 send nothing.
    assert len(server.requests) <= 2 * 3 < 12
    # The next batch tries again (a chat's next line, a resumed run).
    ok = serve(lambda n, body: ("ok", "fine"))
    client.url = ok.url + "/chat/completions"
    assert client.complete_many(batch[:3]) == ["fine"] * 3


def test_client_errors_stop_the_batch_after_one_request(serve):
    server = serve(lambda n, body: ("error", 401, None))
    client = _client(server.url, max_concurrency=1)
    with pytest.raises(EndpointError, match="HTTP 401"):
        client.complete_many([[{"role": "user", "content": f"q{k}"}] for k in range(5)])
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "url",
    ["localhost:8000/v1", "127.0.0.1:8000", "ftp://host/v1", "http://", "http://host:port/v1"],
)
def test_malformed_urls_are_named_before_the_key(monkeypatch, url):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(EndpointConfigError, match=r"llm_base_url=.*(http://|not a URL)"):
        ChatClient(ChatConfig(base_url=url, model="m", api_key_env="NO_SUCH_KEY_VAR"))


def test_missing_key_and_model_name_their_fields(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(MissingApiKeyError, match="NO_SUCH_KEY_VAR.*simulator.llm_api_key_env"):
        ChatClient(ChatConfig("https://api.example.com/v1", "m", api_key_env="NO_SUCH_KEY_VAR"))
    with pytest.raises(EndpointConfigError, match=r"config\.multi_turn\.tracker_model"):
        ChatClient(ChatConfig("http://127.0.0.1/v1", "", fields="multi_turn.tracker_"))


def test_probe_refused_timeout_and_unknown_model(serve):
    with pytest.raises(EndpointError, match="connection refused"):
        _client(_free_port_url()).probe()
    slow = serve(lambda n, body: ("hang", 5.0))
    with pytest.raises(EndpointError, match=r"no reply within 0\.3 s"):
        _client(slow.url).probe(timeout_s=0.3)
    picky = serve(lambda n, body: ("ok", "OK") if body["model"] == "real" else ("error", 404, None))
    with pytest.raises(EndpointError, match=r"model 'nope'.*HTTP 404.*model name"):
        _client(picky.url, model="nope").probe()
    _client(picky.url, model="real").probe()
    assert picky.requests[-1]["max_tokens"] == 1  # The test request is cheap.
    garbage = serve(lambda n, body: ("garbage",))
    with pytest.raises(EndpointError, match="not an OpenAI chat completion"):
        _client(garbage.url).probe()


def _llm_config(url, **tracker):
    config = tiny.get_config()
    config.simulator.kind = "llm"
    config.simulator.llm_base_url = url
    config.simulator.llm_model = "m"
    config.simulator.llm_api_key_env = ""
    for key, value in tracker.items():
        config.multi_turn[key] = value
    return config


def test_preflight_reports_an_unreachable_simulator_before_any_stage(serve):
    config = _llm_config(_free_port_url())
    with pytest.raises(EndpointError, match="the LLM simulator: chat endpoint .*refused"):
        preflight.check(config, ["prepare", "simulate"])
    # Stages that never call the endpoint do not test it.
    preflight.check(config, ["prepare"])
    server = serve(lambda n, body: ("ok", "OK"))
    preflight.check(_llm_config(server.url), ["prepare", "simulate"])
    assert len(server.requests) == 1


def test_preflight_tests_the_state_tracker(serve):
    server = serve(lambda n, body: ("error", 401, None))
    config = tiny.get_config()
    config.multi_turn.state_tracker = "llm"
    config.multi_turn.tracker_base_url = server.url
    config.multi_turn.tracker_model = "m"
    config.multi_turn.tracker_api_key_env = ""
    with pytest.raises(EndpointError, match=r"the LLM state tracker: .*HTTP 401.*API key"):
        preflight.check(config, ["prepare", "multi_turn"])


def test_preflight_names_batch_sizes_the_devices_cannot_share():
    config = tiny.get_config()
    config.em.batch_size = 30
    config.em.eval_batch_size = 12
    preflight.check_batch_sizes(config, ["train"], device_count=3)
    with pytest.raises(ConfigError, match=r"config\.em\.batch_size=30 .* 4 devices"):
        preflight.check_batch_sizes(config, ["train"], device_count=4)
    config.pretrain.microbatch = 3
    with pytest.raises(ConfigError, match=r"config\.pretrain\.microbatch=3"):
        preflight.check_batch_sizes(config, ["pretrain"], device_count=2)
    preflight.check_batch_sizes(config, ["prepare", "simulate"], device_count=7)


def test_preflight_knows_the_pipelines_stages():
    from latentcrs_jax import pipeline

    assert [s.name for s in pipeline.STAGES] == list(preflight.STAGES)
    assert preflight.stage_names("encode") == ["prepare", "simulate", "encode"]
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        preflight.stage_names("nope")


def test_preflight_names_bad_sections():
    config = tiny.get_config()
    config.em.unlock()
    config.em.typo_field = 1
    with pytest.raises(
        ConfigError, match=r"config\.em: unknown config\.em fields: \['typo_field'\]"
    ):
        preflight.check_sections(config)
    config = tiny.get_config()
    config.pretrain.loss = "mse"
    with pytest.raises(ConfigError, match=r"config\.pretrain: pretrain\.loss must be one of"):
        preflight.check_sections(config)
