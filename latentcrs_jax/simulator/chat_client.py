"""A small client for OpenAI-compatible chat endpoints (vLLM, Ollama, llama.cpp, hosted APIs).

`POST {base_url}/chat/completions` with {model, messages, temperature, max_tokens}, using only
the standard library. It bounds concurrency with a semaphore around each HTTP request, applies a
per-request timeout, retries timeouts, dropped connections, HTTP 429 and 5xx (and malformed
replies) with exponential backoff plus jitter from a seeded RNG (honouring Retry-After), and
keeps an append-only JSONL cache keyed by a hash of (model, messages) so an interrupted run
resumes without repeating calls; a truncated last line left by a crash is skipped on load.
Each call's token counts (`tokens.TokenUsage`: the reply's `usage` field, else a local
tokenizer's count, else an estimate marked as such) are kept with its cache line, so a re-run
from the cache reports the same tokens; `usage_for(messages)` returns them.

It fails fast: a refused connection or an unknown host is final at once (no retries), and once
one request of a batch (`map`, `complete_many`) has failed for good the batch's other requests
stop instead of spending their own retries. `probe` sends one cheap request so that a pipeline
can check an endpoint before its first stage.
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
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from absl import logging

from latentcrs_jax.errors import UserInputError
from latentcrs_jax.simulator import tokens

Message = Mapping[str, str]
T = TypeVar("T")
R = TypeVar("R")

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


class EndpointError(UserInputError, RuntimeError):
    """The chat endpoint failed: unreachable after retries, or a non-retryable HTTP error."""


class EndpointConfigError(UserInputError, ValueError):
    """The endpoint settings are unusable: an empty or malformed URL, no model name."""


class MissingApiKeyError(UserInputError, RuntimeError):
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
    fields: str = "simulator.llm_"  # Where these settings live in the config (for messages).
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


def check_base_url(base_url: str, field: str = "llm_base_url") -> None:
    """Raises EndpointConfigError unless `base_url` is an http(s) URL with a host.

    Args:
      base_url: e.g. "http://127.0.0.1:8000/v1".
      field: the config field that holds it, for the message.
    """
    if not base_url:
        raise EndpointConfigError(f"chat endpoint base_url is empty (config.{field})")
    try:
        parsed = urllib.parse.urlparse(base_url)
        host = parsed.hostname
        parsed.port  # noqa: B018 - raises ValueError on a port that is not a number.
    except ValueError as e:
        raise EndpointConfigError(f"config.{field}={base_url!r} is not a URL: {e}") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise EndpointConfigError(
            f"config.{field}={base_url!r} is not an http:// or https:// URL with a host "
            "(e.g. http://127.0.0.1:8000/v1)"
        )


def _final_reason(error: BaseException) -> str | None:
    """Why a connection error is not worth retrying (refused, unknown host), else None."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason})"
    return None


class ChatClient:
    """Thread-safe OpenAI-compatible chat client with retries, bounded concurrency and a cache.

    Args:
      config: a `ChatConfig`.
      cache_path: JSONL cache file; None disables caching.
      sleep: the sleep function used between retries (tests may pass a fake).

    Raises:
      EndpointConfigError: an empty or malformed base URL, an empty model (a ValueError).
      MissingApiKeyError: `config.api_key_env` is set but missing from the environment and the
        endpoint is not on this machine (local servers need no key).
    """

    def __init__(
        self,
        config: ChatConfig,
        cache_path: str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        check_base_url(config.base_url, f"{config.fields}base_url")
        if not config.model:
            raise EndpointConfigError(f"chat model name is empty (config.{config.fields}model)")
        if config.max_concurrency < 1:
            raise EndpointConfigError(f"max_concurrency must be >= 1, got {config.max_concurrency}")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        if config.api_key_env and not self.api_key and not _is_local(config.base_url):
            raise MissingApiKeyError(
                f"environment variable {config.api_key_env} is not set; it must hold the API key "
                f"for {config.base_url} (use config.{config.fields}api_key_env='' for servers "
                "without a key)"
            )
        self.cache = ResponseCache(cache_path) if cache_path else None
        self._sleep = sleep
        self._semaphore = threading.BoundedSemaphore(config.max_concurrency)
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self.requests_made = 0  # HTTP requests sent (retries included).
        self.cache_hits = 0  # Calls answered from the cache.
        # The error of a request that failed for good in the current batch: the batch's other
        # requests raise it instead of sending (reset when the next batch starts).
        self._failed: EndpointError | None = None
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

    def _post(self, body: bytes, timeout_s: float | None = None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with self._semaphore:
            with self._lock:
                self.requests_made += 1
            timeout = self.config.timeout_s if timeout_s is None else timeout_s
            with urllib.request.urlopen(request, timeout=timeout) as resp:
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

    def _body(self, messages: Sequence[Message], max_tokens: int) -> bytes:
        cfg = self.config
        return json.dumps(
            {
                "model": cfg.model,
                "messages": [dict(m) for m in messages],
                "temperature": cfg.temperature,
                "max_tokens": max_tokens,
            }
        ).encode("utf-8")

    def _fail(self, message: str, cause: BaseException | None = None) -> EndpointError:
        """Records a request's final failure, which stops the rest of its batch."""
        error = EndpointError(message)
        error.__cause__ = cause
        with self._lock:
            if self._failed is None:
                self._failed = error
        return error

    def _check_batch(self) -> None:
        with self._lock:
            failed = self._failed
        if failed is not None:
            raise EndpointError(f"{failed} (the batch stopped at that failure)")

    def _http_error(self, e: urllib.error.HTTPError) -> str:
        try:
            detail = e.read()[:300].decode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001 - the body is only used in the message.
            detail = ""
        return f"HTTP {e.code} {' '.join(detail.split())}".strip()

    def _request(self, messages: Sequence[Message]) -> tuple[str, tokens.TokenUsage | None]:
        cfg = self.config
        body = self._body(messages, cfg.max_tokens)
        last = ""
        for attempt in range(cfg.max_retries + 1):
            self._check_batch()
            retry_after = None
            try:
                data = self._post(body)
                return self._content(data), tokens.from_reply(data.get("usage"))
            except urllib.error.HTTPError as e:
                last = self._http_error(e)
                if e.code != 429 and e.code < 500:
                    raise self._fail(f"chat endpoint {self.url} returned {last}", e) from e
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
                final = _final_reason(e)
                if final is not None:  # Retrying a refused connection only wastes time.
                    raise self._fail(f"chat endpoint {self.url}: {final}", e) from e
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
        raise self._fail(
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

    def probe(self, timeout_s: float = 5.0) -> None:
        """Sends one cheap request (a one-token reply, no retries, not cached).

        Raises:
          EndpointError: naming the URL and what failed: the connection (refused, unknown
            host, no reply within `timeout_s`), the key (HTTP 401/403), the URL or model
            (HTTP 404 and other 4xx), the server (5xx) or the reply's format.
        """
        body = self._body([{"role": "user", "content": "Reply with the word OK."}], 1)
        where = f"chat endpoint {self.url} (model {self.config.model!r})"
        try:
            self._content(self._post(body, timeout_s=min(timeout_s, self.config.timeout_s)))
        except urllib.error.HTTPError as e:
            hint = {
                401: f"; check the API key in ${self.config.api_key_env}",
                403: f"; check the API key in ${self.config.api_key_env}",
                404: "; check the URL (it usually ends in /v1) and the model name",
            }.get(e.code, "")
            raise EndpointError(
                f"{where}: test request answered {self._http_error(e)}{hint}"
            ) from e
        except (
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as e:
            reason = _final_reason(e)
            if reason is None:
                cause = getattr(e, "reason", e)
                if isinstance(cause, TimeoutError | socket.timeout):
                    reason = f"no reply within {min(timeout_s, self.config.timeout_s):g} s"
                else:
                    reason = f"{type(cause).__name__}: {cause}"
            raise EndpointError(f"{where}: {reason}") from e
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
            raise EndpointError(
                f"{where}: the reply is not an OpenAI chat completion ({type(e).__name__}: {e})"
            ) from e

    def _record(self, key: str, usage: tokens.TokenUsage) -> None:
        with self._lock:
            self._usage[key] = usage
            self.usage_total = self.usage_total + usage

    def usage_for(self, messages: Sequence[Message]) -> tokens.TokenUsage:
        """The tokens of the call that answered `messages` (zero if none was made)."""
        with self._lock:
            return self._usage.get(cache_key(self.config.model, messages), tokens.TokenUsage())

    def map(self, fn: Callable[[T], R], inputs: Iterable[T]) -> list[R]:
        """Applies `fn` to every input on `max_concurrency` threads; results in input order.

        One batch: once a request fails for good, the others raise instead of sending.
        """
        inputs = list(inputs)
        with self._lock:
            self._failed = None
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
