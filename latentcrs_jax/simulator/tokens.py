"""Token counts of chat calls: the endpoint's `usage`, else a local tokenizer, else an estimate.

Every reply of an OpenAI-compatible endpoint may carry `usage: {prompt_tokens,
completion_tokens}`; `ChatClient` records it per request (and keeps it in its response cache,
so a re-run from the cache counts the same tokens). A reply without `usage` is counted:
* with the model's tokenizer when one is available locally (`ChatConfig.tokenizer`, or the
  model name when it is a local directory, as vLLM serves them): the prompt through the
  tokenizer's chat template when it has one (exact), else each message's content plus
  `MESSAGE_OVERHEAD` tokens per message and `REPLY_PRIMING` for the reply's start;
* otherwise estimated: ceil(characters / `CHARS_PER_TOKEN`) per text plus the same overheads
  (OpenAI's rule of thumb of about four characters per English token). Estimated counts are
  marked: `TokenUsage.estimated` is the number of calls whose figures are estimates.
`TokenUsage` adds up (calls, prompt and completion tokens, and how they were obtained).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging

CHARS_PER_TOKEN = 4.0  # Estimate: characters per token (English text, BPE tokenizers).
MESSAGE_OVERHEAD = 4  # Tokens a chat template adds around each message (role, separators).
REPLY_PRIMING = 3  # Tokens that start the assistant's reply.


@dataclasses.dataclass(frozen=True)
class TokenUsage:
    """Tokens of one or more chat calls.

    Attributes:
      calls: chat calls counted (a cache hit is a call: the cost of the request it replays).
      prompt: prompt tokens.
      completion: completion tokens.
      reported: calls whose counts came from the endpoint's `usage` field.
      tokenized: calls counted with a local tokenizer.
      estimated: calls whose counts are estimates (characters / CHARS_PER_TOKEN).
    """

    calls: int = 0
    prompt: int = 0
    completion: int = 0
    reported: int = 0
    tokenized: int = 0
    estimated: int = 0

    @property
    def total(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt + self.completion

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(*(a + b for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple[int, ...]:
        """(calls, prompt, completion, reported, tokenized, estimated)."""
        return dataclasses.astuple(self)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TokenUsage:
        """Inverse of `to_dict` (missing keys are 0)."""
        return cls(**{f.name: int(d.get(f.name, 0)) for f in dataclasses.fields(cls)})


def total(usages: Sequence[TokenUsage]) -> TokenUsage:
    """The sum of `usages`."""
    out = TokenUsage()
    for u in usages:
        out = out + u
    return out


def from_reply(usage: Any) -> TokenUsage | None:
    """The `usage` object of a reply as one reported call, or None when absent or malformed."""
    if not isinstance(usage, Mapping):
        return None
    try:
        prompt = int(usage["prompt_tokens"])
        completion = int(usage.get("completion_tokens") or 0)
    except (KeyError, TypeError, ValueError):
        return None
    if prompt < 0 or completion < 0:
        return None
    return TokenUsage(calls=1, prompt=prompt, completion=completion, reported=1)


def estimate_tokens(text: str) -> int:
    """ceil(len(text) / CHARS_PER_TOKEN); 0 for an empty text."""
    return math.ceil(len(text or "") / CHARS_PER_TOKEN)


class TokenCounter:
    """Counts the tokens of a call with a local tokenizer, else estimates them.

    Args:
      tokenizer: a local tokenizer directory (tokenizer.json, optionally tokenizer_config.json
        with a chat template) or a tokenizer.json file; "" or a missing path: estimates.
    """

    def __init__(self, tokenizer: str = ""):
        self.path = str(tokenizer or "")
        self._fast = None  # tokenizers.Tokenizer
        self._chat = None  # transformers tokenizer with a chat template
        if self.path:
            self._load(pathlib.Path(self.path))

    def _load(self, path: pathlib.Path) -> None:
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            return
        import tokenizers

        try:
            self._fast = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # noqa: BLE001 - any unreadable file: estimate instead.
            logging.warning("token counts: cannot read %s (%s); estimating", file, e)
            return
        config = path / "tokenizer_config.json"
        if path.is_dir() and config.is_file() and "chat_template" in config.read_text("utf-8"):
            try:
                import transformers

                self._chat = transformers.AutoTokenizer.from_pretrained(str(path))
            except Exception as e:  # noqa: BLE001 - the content counts still work.
                logging.warning("token counts: no chat template from %s (%s)", path, e)

    @property
    def local(self) -> bool:
        """Whether a tokenizer was loaded (counts are not estimates)."""
        return self._fast is not None

    def _encode(self, text: str) -> int:
        return len(self._fast.encode(text, add_special_tokens=False).ids)

    def count(self, messages: Sequence[Mapping[str, str]], reply: str) -> TokenUsage:
        """The usage of one call: `messages` sent, `reply` received."""
        contents = [str(m.get("content") or "") for m in messages]
        overhead = MESSAGE_OVERHEAD * len(contents) + REPLY_PRIMING
        if self._fast is None:
            prompt = sum(estimate_tokens(c) for c in contents) + overhead
            return TokenUsage(1, prompt, estimate_tokens(reply), estimated=1)
        prompt = None
        if self._chat is not None:
            try:
                ids = self._chat.apply_chat_template(
                    [dict(m) for m in messages], tokenize=True, add_generation_prompt=True
                )
                prompt = len(ids["input_ids"] if isinstance(ids, Mapping) else ids)
            except Exception:  # noqa: BLE001 - a template that rejects the roles: content.
                prompt = None
        if prompt is None:
            prompt = sum(self._encode(c) for c in contents) + overhead
        return TokenUsage(1, prompt, self._encode(reply or ""), tokenized=1)


@functools.lru_cache(maxsize=8)
def counter_for(tokenizer: str, model: str) -> TokenCounter:
    """The counter of a client: `tokenizer`, else the model name when it is a local directory."""
    if tokenizer:
        return TokenCounter(tokenizer)
    if model and pathlib.Path(model).is_dir():
        return TokenCounter(model)
    return TokenCounter("")
