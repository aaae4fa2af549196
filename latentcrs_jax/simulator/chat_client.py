"""A small client for OpenAI-compatible chat endpoints (vLLM, Ollama, llama.cpp, hosted APIs).

`POST {base_url}/chat/completions` with {model, messages, temperature, max_tokens}, using only
the standard library. It bounds concurrency with a semaphore around each HTTP request, applies a
per-request timeout, retries connection errors, timeouts, HTTP 429 and 5xx (and malformed
replies) with exponential backoff plus jitter from a seeded RNG (honouring Retry-After), and
keeps an append-only JSONL cache keyed by a hash of (model, messages) so an interrupted run
resumes without repeating calls; a truncated last line left by a crash is skipped on load.
Each call's token counts (`tokens.TokenUsage`: the reply's `usage` field, else a local
tokenizer's count, else an estimate marked as such) are kept with its cache line, so a re-run
from the cache reports the same tokens; `usage_for(messages)` returns them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import os
import pathlib
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from absl import logging

from latentcrs_jax.simulator import tokens

Message = Mapping[str, str]
T = TypeVar("T")
R = TypeVar("R")

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


class EndpointError(RuntimeError):
    """The chat endpoint failed: unreachable after retries, or a non-retryable HTTP error."""


class MissingApiKeyError(RuntimeError):
    """The API-key environment variable is not set for a non-local endpoint."""


@dataclasses.dataclass(frozen=True)
class ChatConfig:
    """Settings of a `ChatClient` (see `configs/base.py:get_simulator_config`)."""

    base_url: str  # e.g. "http://127.0.0.1:8000/v1" or "https://api.openai.com/v1".
    model: str  # Model name sent in the request body.
    api_key_env: str = "OPENAI_API_KEY"  # Env var holding the key; "" sends no key.
    temperature: float = 0.7  # Sampling temperature.
    max_tokens: int = 512  # Reply length limit.
    timeout_s: float = 60.0  # Per-request socket timeout.
    max_retries: int = 5  # Retries after the first try (connection errors, 429, 5xx, timeouts).
    max_concurrency: int = 4  # At most this many requests in flight.
    backoff_base_s: float = 1.0  # First backoff delay; doubles every retry.
    backoff_max_s: float = 30.0  # Cap of one backoff delay.
    seed: int = 0  # Seed of the jitter RNG.
    tokenizer: str = ""  # Local tokenizer dir for token counts without `usage`; "" = estimate.


def cache_key(model: str, messages: Sequence[Message]) -> str:
    """SHA-256 of the canonical JSON of (model, messages)."""
    payload = json.dumps(
        {"model": model, "messages": [dict(m) for m in messages]},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """Append-only JSONL cache: one {"key", "model", "response", "usage"} object per line.

    Lines that do not parse (a truncated last line after a crash) are skipped with a warning;
    the next append starts on a fresh line. Later lines win for a repeated key.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = pathlib.Path(path)
        self._lock = threading.Lock()
        self._data: dict[str, str] = {}
        self._usage: dict[str, tokens.TokenUsage] = {}
        self._needs_newline = False
        if self.path.exists():
            raw = self.path.read_bytes()
            self._needs_newline = bool(raw) and not raw.endswith(b"\n")
            bad = 0
            for line in raw.decode("utf-8", errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    self._data[str(rec["key"])] = str(rec["response"])
                    if isinstance(rec.get("usage"), dict):
                        self._usage[str(rec["key"])] = tokens.TokenUsage.from_dict(rec["usage"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1
            if bad:
                logging.warning("%s: skipped %d unreadable cache line(s)", self.path, bad)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> str | None:
        """The cached response for `key`, or None."""
        with self._lock:
            return self._data.get(key)

    def usage(self, key: str) -> tokens.TokenUsage | None:
        """The token counts stored with `key`'s response (None in older cache lines)."""
        with self._lock:
            return self._usage.get(key)

    def put(
        self, key: str, model: str, response: str, usage: tokens.TokenUsage | None = None
    ) -> None:
        """Records a response and its token counts (memory and one appended, flushed line)."""
        rec = {"key": key, "model": model, "response": response}
        if usage is not None:
            rec["usage"] = usage.to_dict()
        line = json.dumps(rec, ensure_ascii=False)
        with self._lock:
            self._data[key] = response
            if usage is not None:
                self._usage[key] = usage
            with self.path.open("a", encoding="utf-8") as f:
                if self._needs_newline:
                    f.write("\n")
                    self._needs_newline = False
                f.write(line + "\n")
                f.flush()


def _is_local(base_url: str) -> bool:
    host = urllib.parse.urlparse(base_url).hostname or ""
    return host in _LOCAL_HOSTS


class ChatClient:
    """Thread-safe OpenAI-compatible chat client with retries, bounded concurrency and a cache.

    Args:
      config: a `ChatConfig`.
      cache_path: JSONL cache file; None disables caching.
      sleep: the sleep function used between retries (tests may pass a fake).

    Raises:
      ValueError: empty base URL or model.
      MissingApiKeyError: `config.api_key_env` is set but missing from the environment and the
        endpoint is not on this machine (local servers need no key).
    """

    def __init__(
        self,
        config: ChatConfig,
        cache_path: str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not config.base_url:
            raise ValueError("chat endpoint base_url is empty (config.simulator.llm_base_url)")
        if not config.model:
            raise ValueError("chat model name is empty (config.simulator.llm_model)")
        if config.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {config.max_concurrency}")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if config.api_key_env and not self.api_key and not _is_local(config.base_url):
            raise MissingApiKeyError(
                f"environment variable {config.api_key_env} is not set; it must hold the API key "
                f"for {config.base_url} (use llm_api_key_env='' for servers without a key)"
            )
        self.cache = ResponseCache(cache_path) if cache_path else None
        self._sleep = sleep
        self._semaphore = threading.BoundedSemaphore(config.max_concurrency)
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self.requests_made = 0  # HTTP requests sent (retries included).
        self.cache_hits = 0  # Calls answered from the cache.
        self.counter = tokens.counter_for(config.tokenizer, config.model)
        self._usage: dict[str, tokens.TokenUsage] = {}  # Cache key -> its call's tokens.
        self.usage_total = tokens.TokenUsage()  # Every call (cache hits included).

    # ------------------------------------------------------------------------------ internals
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cfg = self.config
        with self._lock:
            jitter = self._rng.uniform(0.0, cfg.backoff_base_s)
        delay = min(cfg.backoff_max_s, cfg.backoff_base_s * 2**attempt + jitter)
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.backoff_max_s))
        return delay

    def _post(self, body: bytes) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._semaphore:
            with self._lock:
                self.requests_made += 1
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as resp:
                payload = resp.read()
        return json.loads(payload.decode("utf-8"))

    @staticmethod
    def _content(data: Any) -> str:
        content = data["choices"][0]["message"]["content"]
        if content is None:
            return ""
        if not isinstance(content, str):
            raise TypeError(f"message content is {type(content).__name__}, not str")
        return content

    def _request(self, messages: Sequence[Message]) -> tuple[str, tokens.TokenUsage | None]:
        cfg = self.config
        body = json.dumps(
            {
                "model": cfg.model,
                "messages": [dict(m) for m in messages],
                "temperature": cfg.temperature,
                "max_tokens": cfg.max_tokens,
            }
        ).encode("utf-8")
        last = ""
        for attempt in range(cfg.max_retries + 1):
            retry_after = None
            try:
                data = self._post(body)
                return self._content(data), tokens.from_reply(data.get("usage"))
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read()[:300].decode("utf-8", errors="replace")
                except Exception:  # noqa: BLE001 - the body is only used in the message.
                    detail = ""
                if e.code != 429 and e.code < 500:
                    raise EndpointError(f"{self.url} returned HTTP {e.code}: {detail}") from e
                last = f"HTTP {e.code} {detail}".strip()
                header = e.headers.get("Retry-After") if e.headers else None
                try:
                    retry_after = float(header) if header is not None else None
                except ValueError:
                    retry_after = None
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
                last = f"malformed reply ({type(e).__name__}: {e})"
            if attempt < cfg.max_retries:
                delay = self._backoff(attempt, retry_after)
                logging.warning(
                    "%s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.url,
                    attempt + 1,
                    cfg.max_retries + 1,
                    last,
                    delay,
                )
                self._sleep(delay)
        raise EndpointError(
            f"chat endpoint {self.url} unreachable or failing after {cfg.max_retries + 1} "
            f"attempts; last error: {last}"
        )

    # ----------------------------------------------------------------------------- public API
    def complete(self, messages: Sequence[Message]) -> str:
        """The assistant reply to `messages` (from the cache when present).

        Raises:
          EndpointError: every retry failed, or the endpoint answered a non-retryable error.
        """
        key = cache_key(self.config.model, messages)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                usage = self.cache.usage(key) or self.counter.count(messages, hit)
                with self._lock:
                    self.cache_hits += 1
                self._record(key, usage)
                return hit
        text, usage = self._request(messages)
        usage = usage or self.counter.count(messages, text)
        if self.cache is not None:
            self.cache.put(key, self.config.model, text, usage)
        self._record(key, usage)
        return text

    def _record(self, key: str, usage: tokens.TokenUsage) -> None:
        with self._lock:
            self._usage[key] = usage
            self.usage_total = self.usage_total + usage

    def usage_for(self, messages: Sequence[Message]) -> tokens.TokenUsage:
        """The tokens of the call that answered `messages` (zero if none was made)."""
        with self._lock:
            return self._usage.get(cache_key(self.config.model, messages), tokens.TokenUsage())

    def map(self, fn: Callable[[T], R], inputs: Iterable[T]) -> list[R]:
        """Applies `fn` to every input on `max_concurrency` threads; results in input order."""
        inputs = list(inputs)
        if len(inputs) <= 1 or self.config.max_concurrency == 1:
            return [fn(x) for x in inputs]
        with concurrent.futures.ThreadPoolExecutor(self.config.max_concurrency) as pool:
            return list(pool.map(fn, inputs))

    def complete_many(self, batch: Sequence[Sequence[Message]]) -> list[str]:
        """`complete` over a batch, concurrently, identical requests sent once."""
        unique: dict[str, Sequence[Message]] = {}
        keys = []
        for messages in batch:
            key = cache_key(self.config.model, messages)
            keys.append(key)
            unique.setdefault(key, messages)
        replies = dict(zip(unique, self.map(self.complete, list(unique.values()))))
        return [replies[k] for k in keys]
