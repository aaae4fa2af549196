"""The chat endpoint of LatentCRS^V's validator and the LLM-only baseline (`multi_turn.llm_*`).

Both use one OpenAI-compatible endpoint, separate from the simulator's and the state tracker's,
through the project's one client (`simulator/chat_client.py`: bounded concurrency, timeouts,
retries with backoff, the append-only cache, token counts). `make_client` is cheap and sends
nothing: call it before any long work, as it is where a missing API key shows.
"""

from __future__ import annotations

import dataclasses
import os

from latentcrs_jax.errors import UserInputError
from latentcrs_jax.simulator.chat_client import ChatClient, ChatConfig, MissingApiKeyError


class EndpointConfigError(UserInputError, ValueError):
    """A bad `multi_turn.llm_*` / `validator` setting."""


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
    """The `multi_turn.llm_*` fields (comments in configs/base.py)."""

    base_url: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0  # Greedy by default.
    max_tokens: int = 512
    timeout_s: float = 60.0
    max_retries: int = 5
    max_concurrency: int = 4
    tokenizer: str = ""

    @property
    def configured(self) -> bool:
        """Whether a URL and a model are set."""
        return bool(self.base_url.strip() and self.model.strip())

    def missing(self) -> list[str]:
        """The `multi_turn.llm_*` fields a run needs and lacks."""
        return [
            f"multi_turn.llm_{name}"
            for name in ("base_url", "model")
            if not str(getattr(self, name)).strip()
        ]

    def chat_config(self) -> ChatConfig:
        """The `ChatConfig` of the client."""
        return ChatConfig(
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            max_concurrency=self.max_concurrency,
            tokenizer=self.tokenizer,
            fields="multi_turn.llm_",
        )


def make_client(
    settings: EndpointSettings, cache_path: str | os.PathLike[str] | None = None
) -> ChatClient | None:
    """The client (None when no endpoint is configured); no request is sent.

    Raises:
      EndpointConfigError: the API-key variable is missing for a remote endpoint.
    """
    if not settings.configured:
        return None
    if settings.max_concurrency < 1:
        raise EndpointConfigError("multi_turn.llm_max_concurrency must be >= 1")
    try:
        return ChatClient(settings.chat_config(), cache_path=cache_path)
    except MissingApiKeyError as e:
        raise EndpointConfigError(
            f"LLM validator / LLM-only baseline: environment variable {settings.api_key_env} is "
            f"not set; it must hold the API key for {settings.base_url} "
            "(multi_turn.llm_api_key_env='' for servers without a key)"
        ) from e
