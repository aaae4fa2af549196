"""Interactive chat against a trained workdir: pick a user or liked titles, then ask.

`ChatSession.handle(line) -> str` is the whole interaction (no I/O), so the chat can be driven
from a terminal, a pipe or a test. Commands:
  /user <raw id>        take an existing user's most recent items as the liked history
  /like A; B (1995)     add liked titles (fuzzy matching; suggestions when unknown/ambiguous)
  /system <name>        switch recommender (latentcrs, fusion, late_fusion, text, backbone;
                        latentcrs_v:
                        ^V, a validator re-ranks ^F's top candidates; llm_only: the zero-shot
                        LLM baseline, with an endpoint)
  /reset                forget the user, the liked items and the dialogue
  /help, /quit          help; leave (end of input also leaves)
Anything else is a request. Titles named in it ("I loved Alien and Heat", "something like The
Matrix but funnier"; `mentions.find_titles`, resolved like /like) join the liked history unless
negated ("not Titanic"). Each request is added to the dialogue; the recommender ranks every
item with (liked history, accumulated request text); the hard filter re-orders the top
`candidates` by the stated features (items already shown go last); the top `top_k` are shown
with their attributes and the intents of p(m|u,x) that drove them. "not these" (or "no, ...",
"something else") asks for other items: the shown ones go back, and any words after it refine
the request. Empty, very long, non-English or nonsense input gets an answer, never a crash.
The stated features come from the rule matcher, or, with `multi_turn.state_tracker="llm"`,
from the paper's JSON state-tracking prompt on an OpenAI-compatible endpoint (`llm_tracker.py`;
its cache is `<workdir>/chat/tracker_cache.jsonl`); an unparsable reply or a failing endpoint
falls back to the rule matcher for that turn. `latentcrs_v` re-ranks the filtered top
`validator_candidates` with the multi-turn stage's validator (the keyless stand-in, or the LLM
with `multi_turn.validator="llm"`; a failing endpoint keeps ^F's order, with a note), and
`llm_only` asks the `multi_turn.llm_*` endpoint for titles (`llm_recommender.py`).

Intent labels: intent m's items are the `top_items` items with the highest c_m . e_y (the
intent vector against the backbone's item embeddings); its label is their most over-represented
genres/categories and decade, with two example titles.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging

from latentcrs_jax.conversation import filter as filter_lib
from latentcrs_jax.conversation import llm_recommender as llm_rec_lib
from latentcrs_jax.conversation import llm_tracker
from latentcrs_jax.conversation import validator as validator_lib
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.mentions import find_titles
from latentcrs_jax.conversation.state import ConversationState
from latentcrs_jax.conversation.titles import TitleIndex, split_titles
from latentcrs_jax.errors import UserInputError
from latentcrs_jax.simulator.chat_client import EndpointError

MAX_INPUT_CHARS = 2000  # Longer input is cut (the encoder reads at most 256 tokens anyway).
MAX_TEXT_CHARS = 1000  # Ranking text kept from the end of the dialogue.
SYSTEM_ORDER = ("latentcrs", "fusion", "late_fusion", "text", "backbone")
VALIDATED = "latentcrs_v"  # ^V: the validator over latentcrs's filtered list.
LLM_ONLY = "llm_only"  # The zero-shot LLM baseline.
HELP = """Commands:
  /user <id>           chat as an existing user (their recent items are the liked history)
  /like A; B (1995)    add liked titles, separated by ';' (a year picks between same names)
  /system <name>       switch recommender: {systems}
  /reset               start over (forgets the user, liked titles and the dialogue)
  /help                this text
  /quit                leave
Anything else is a request, e.g. "something tense from the 90s, no horror" or
"I loved Alien and Heat, something like them but funnier" (titles named there count as liked).
Say "not these" (optionally followed by more detail) to see other items."""
_REFINE_RE = re.compile(  # "Show me other items" at the start of a message.
    r"^\s*(?:"
    r"(?:no+|nope|nah)(?:\s*[,.!;:-]+|\s*$)"
    r"|not (?:these|those|them|this|that|it)\b"
    r"|none of (?:these|those|them)\b"
    r"|something else\b|try again\b"
    r"|(?:show me )?(?:others?|more|next)(?: ones?| please)?\s*[.!]*\s*$"
    r")[\s,.!;:-]*",
    re.IGNORECASE,
)
# Control characters, replacement characters and lone surrogates (undecodable bytes from a
# non-UTF-8 terminal or pipe): the tokenizer takes only valid Unicode text.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd\ud800-\udfff]")


class ChatError(UserInputError, ValueError):
    """The chat cannot start (e.g. the workdir is not trained)."""


@dataclasses.dataclass(frozen=True)
class ChatSettings:
    """How many items are shown and re-ordered."""

    top_k: int = 5  # Items shown per turn.
    candidates: int = 50  # Top of the ranking the hard filter re-orders.
    mask_history: bool = True  # Never recommend liked items.
    num_intents_shown: int = 3  # Intents listed per turn.
    validator_candidates: int = 20  # ^V: filtered items the validator re-ranks.


class ChatSession:
    """One chat: the liked history, the dialogue and the recommender in use.

    Args:
      recommenders: name -> `Recommender` (score(histories int32[B, H], texts) -> float[B, N+1],
        optional intents(...) -> float[B, K]).
      items: the items table (items[0] is PAD).
      domain: "movies" | "video games" | "CDs".
      user_raw_ids: raw id of each user index.
      user_sequence: user index -> int[n] its items in time order.
      history_len: H, the history width the recommenders take.
      settings: display and filter settings.
      intent_names: K labels (see `intent_labels`), or None.
      intent_affinity: float[K, N+1] c_m . e_y, or None.
      system: the recommender to start with (default: the first of SYSTEM_ORDER present).
      tracker: an LLM state tracker (None: the rule matcher reads each request).
      validator: ^V's validator (`validator.StandInValidator` or `LLMValidator`); adds the
        system "latentcrs_v" when "latentcrs" exists.
      llm_recommender: the LLM-only baseline; adds the system "llm_only".
    """

    def __init__(
        self,
        recommenders: Mapping[str, Any],
        items: Sequence[Mapping[str, Any]],
        domain: str,
        user_raw_ids: Sequence[str] = (),
        user_sequence: Callable[[int], np.ndarray] | None = None,
        history_len: int = 24,
        settings: ChatSettings = ChatSettings(),
        intent_names: Sequence[str] | None = None,
        intent_affinity: np.ndarray | None = None,
        system: str | None = None,
        tracker: llm_tracker.LLMStateTracker | None = None,
        validator: Any = None,
        llm_recommender: llm_rec_lib.LLMRecommender | None = None,
    ):
        if not recommenders:
            raise ChatError("no recommender to chat with")
        self.recommenders = dict(recommenders)
        self.items = items
        self.vocab = FeatureVocab(items, domain)
        self.titles = TitleIndex(items)
        self.users = {str(u): i for i, u in enumerate(user_raw_ids)}
        self.user_sequence = user_sequence
        self.history_len = int(history_len)
        self.settings = settings
        self.intent_names = list(intent_names) if intent_names is not None else None
        self.intent_affinity = intent_affinity
        self.tracker = tracker
        self.validator = validator if "latentcrs" in self.recommenders else None
        self.llm_recommender = llm_recommender
        self.systems = sorted(self.recommenders)
        self.systems += [VALIDATED] if self.validator is not None else []
        self.systems += [LLM_ONLY] if llm_recommender is not None else []
        order = [s for s in SYSTEM_ORDER if s in self.recommenders] + sorted(self.recommenders)
        self.system = system if system in self.systems else order[0]
        self.finished = False
        self.user: str | None = None
        self.state = ConversationState()

    # ------------------------------------------------------------------------------ entry
    def greeting(self) -> str:
        """The first message."""
        return (
            f"Conversational recommender ({self.system}; {len(self.items) - 1} items). "
            "Pick a user with /user <id> or tell me titles you like with /like A; B, "
            "then ask for something. /help lists the commands."
        )

    def handle(self, line: str) -> str:
        """Answers one line of input (a command or a request); never raises.

        A line that fails leaves the session as it was before it (a bad turn must not poison
        the dialogue that every later request is ranked on).
        """
        saved = (self.user, self.system, copy.deepcopy(self.state))
        try:
            return self._handle(line)
        except Exception as e:  # The chat must survive any input; the trace goes to the log.
            self.user, self.system, self.state = saved
            logging.error("chat: %s handling %r: %s", type(e).__name__, str(line)[:80], e)
            logging.debug("chat: traceback", exc_info=True)
            return f"Sorry, something went wrong ({type(e).__name__}); please try again."

    def _handle(self, line: str) -> str:
        text = _CONTROL_RE.sub(" ", str(line)).strip()
        note = ""
        if len(text) > MAX_INPUT_CHARS:
            text = text[:MAX_INPUT_CHARS]
            note = f"(Your message was long; I read its first {MAX_INPUT_CHARS} characters.)\n"
        if not text:
            return "Tell me what you are looking for, or type /help."
        if text.startswith("/"):
            cmd, _, arg = text[1:].partition(" ")
            handler = {
                "help": self._help,
                "user": self._user,
                "like": self._like,
                "system": self._system,
                "reset": self._reset,
                "quit": self._quit,
                "exit": self._quit,
            }.get(cmd.lower())
            if handler is None:
                return f"Unknown command /{cmd[:40]}. Type /help for the commands."
            return note + handler(arg.strip())
        return note + self._request(text)

    # --------------------------------------------------------------------------- commands
    def _help(self, arg: str) -> str:
        del arg
        return HELP.format(systems=", ".join(self.systems))

    def _quit(self, arg: str) -> str:
        del arg
        self.finished = True
        return "Bye!"

    def _reset(self, arg: str) -> str:
        del arg
        self.user = None
        self.state = ConversationState()
        return "Starting over: no user, no liked titles, no dialogue."

    def _system(self, arg: str) -> str:
        if arg not in self.systems:
            return f"Unknown system {arg[:40]!r}; available: {', '.join(self.systems)}."
        self.system = arg
        if arg == VALIDATED:
            return f"Now recommending with {arg} (LatentCRS^V, {self.validator.label})."
        return f"Now recommending with {arg}."

    def _user(self, arg: str) -> str:
        if not arg:
            return "Usage: /user <raw user id>, e.g. /user " + (next(iter(self.users), "1"))
        if arg not in self.users or self.user_sequence is None:
            close = [u for u in self.users if u.startswith(arg)][:5]
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            return f"No user {arg[:40]!r}.{hint}"
        seq = [int(i) for i in np.asarray(self.user_sequence(self.users[arg]))]
        self.user = arg
        self.state = ConversationState(history=seq[-self.history_len :])
        recent = ", ".join(self._name(i) for i in reversed(self.state.history[-3:]))
        return (
            f"Chatting as user {arg}: {len(self.state.history)} liked items "
            f"(most recent: {recent}). What are you looking for?"
        )

    def _like(self, arg: str) -> str:
        queries = split_titles(arg)
        if not queries:
            return "Usage: /like Title; Another title (1995)"
        lines = []
        for q in queries[:20]:
            m = self.titles.lookup(q[:200])
            if m.item is not None:
                self.state.history = [i for i in self.state.history if i != m.item] + [m.item]
                guess = " (closest match)" if m.status == "fuzzy" else ""
                lines.append(f"Added {self._name(m.item)}{guess}.")
            elif m.status == "ambiguous":
                opts = "; ".join(self._name(i) for i in m.suggestions)
                lines.append(f"{q[:80]!r} matches several titles: {opts}. Which one?")
            elif m.suggestions:
                opts = "; ".join(self._name(i) for i in m.suggestions)
                lines.append(f"No title {q[:80]!r}. Did you mean: {opts}?")
            else:
                lines.append(f"No title like {q[:80]!r}.")
        self.state.history = self.state.history[-self.history_len :]
        lines.append(f"{len(self.state.history)} liked titles so far.")
        return "\n".join(lines)

    # ---------------------------------------------------------------------------- requests
    def _titles_in(self, text: str) -> str:
        """Takes the titles named in a request as liked (unless negated); returns a note."""
        lines = []
        for found in find_titles(text[:MAX_INPUT_CHARS], self.titles)[:20]:
            m = found.match
            if m.item is not None and not found.negated:
                self.state.history = [i for i in self.state.history if i != m.item] + [m.item]
                lines.append(f"(Taking {self._name(m.item)} as a title you like.)")
            elif m.status == "ambiguous" and not found.negated:
                opts = "; ".join(self._name(i) for i in m.suggestions)
                lines.append(f"({found.text!r} matches several titles: {opts}; /like picks one.)")
        self.state.history = self.state.history[-self.history_len :]
        return "".join(line + "\n" for line in lines)

    def _request(self, text: str) -> str:
        refine = _REFINE_RE.match(text)
        rest = text[refine.end() :].strip() if refine else text
        note = self._titles_in(rest)
        ignore = [str(self.items[i].get("title") or "") for i in self.state.history]
        if self.tracker is None:
            self.state.add_user_turn(text, self.vocab, ignore, ranked=bool(rest))
        else:
            self.state.add_user_turn(text, None, ranked=bool(rest))
            (tracked,) = self.tracker.update([self.state], [ignore])
            if tracked.fallback == "endpoint":
                note += "(The language model is unreachable; I read your words by rules.)\n"
        query = self.state.ranking_text("dialogue", max_chars=MAX_TEXT_CHARS)
        history = np.zeros((1, self.history_len), np.int32)
        liked = self.state.history[-self.history_len :]
        if liked:
            history[0, -len(liked) :] = liked
        if self.system == LLM_ONLY:
            rec = None
            shown, more = self._llm_only()
        else:
            rec = self.recommenders["latentcrs" if self.system == VALIDATED else self.system]
            shown, more = self._ranked(rec, history, query)
        note += more
        inc = [self.vocab.label(f) for f in self.state.included]
        exc = [self.vocab.label(f) for f in self.state.excluded]
        names = [filter_lib.item_title(self.items[i]) for i in shown]
        self.state.add_system_turn(filter_lib.system_utterance(names, inc, exc), shown)
        return note + self._render(shown, inc, exc, rec, history, query)

    def _ranked(self, rec, history: np.ndarray, query: str) -> tuple[list[int], str]:
        """The filtered top items of a trained system (re-ranked by the validator for ^V)."""
        validate = self.system == VALIDATED
        n = self.settings.validator_candidates if validate else self.settings.top_k
        pool = self.settings.candidates + 2 * n
        ranked = filter_lib.rank_items(
            np.asarray(rec.score(history, [query])), history, pool, self.settings.mask_history
        )[0]
        shown = filter_lib.hard_filter(
            ranked,
            self.vocab.features_of,
            self.state.included,
            self.state.excluded,
            self.state.shown,
            top_k=n,
            candidates=self.settings.candidates,
            has_title=lambda i: bool(self.items[i].get("title")),
        )
        if not validate:
            return shown, ""
        note = ""
        try:
            (result,) = self.validator.rerank_many([self.state.turns], [shown], [query])
            shown = result.order
            if result.status == "unparsable":
                note = "(The validator's reply did not parse; the filter's order is kept.)\n"
        except EndpointError as e:
            logging.error("chat validator: %s", e)
            note = "(The validating language model is unreachable; the filter's order is kept.)\n"
        return validator_lib.shown_last(shown, self.state.shown)[: self.settings.top_k], note

    def _llm_only(self) -> tuple[list[int], str]:
        """The LLM-only baseline's items for the dialogue so far."""
        try:
            (result,) = self.llm_recommender.recommend_many([self.state.turns])
        except EndpointError as e:
            logging.error("chat LLM-only recommender: %s", e)
            return [], "(The language model is unreachable; no recommendation this turn.)\n"
        history = self.state.history if self.settings.mask_history else ()
        shown = llm_rec_lib.choose_shown(
            result.items, self.settings.top_k, self.state.shown, history
        )
        note = ""
        if result.unresolved:
            missed = "; ".join(t[:60] for t in result.unresolved[:5])
            note = f"(Titles the model named that are not in the catalogue: {missed}.)\n"
        return shown, note

    def _render(self, shown, inc, exc, rec, history, query) -> str:
        lines = []
        if inc or exc:
            lines.append(
                "We infer you like: "
                + (", ".join(inc) if inc else "anything")
                + (f" (not: {', '.join(exc)})" if exc else "")
            )
        top = self._top_intents(rec, history, query)
        if not shown:
            lines.append("I have nothing left to recommend for that; try /reset.")
        for n, i in enumerate(shown, 1):
            lines.append(f"  {n}. {self._name(i)} | {self._attributes(i)}{self._via(i, top)}")
        if top and self.intent_names is not None:
            lines.append(
                "Intents behind these (p(m|u,x)): "
                + "; ".join(f"#{m} {p:.0%} {self.intent_names[m]}" for m, p in top)
            )
        lines.append('Say more to refine, or "not these" for other items.')
        return "\n".join(lines)

    def _top_intents(self, rec, history, query) -> list[tuple[int, float]]:
        if getattr(rec, "intents", None) is None:
            return []
        p = np.asarray(rec.intents(history, [query]))[0]
        order = np.argsort(-p, kind="stable")[: self.settings.num_intents_shown]
        return [(int(m), float(p[m])) for m in order]

    def _via(self, item: int, top: Sequence[tuple[int, float]]) -> str:
        if not top or self.intent_affinity is None:
            return ""
        m = max((m for m, _ in top), key=lambda m: self.intent_affinity[m, item])
        return f" | intent #{m}"

    def _name(self, item: int) -> str:
        return filter_lib.item_title(self.items[item])

    def _attributes(self, item: int) -> str:
        it = self.items[item]
        parts = list(it.get("genres") or [])[:4] or list(it.get("categories") or [])[-3:]
        tags = list(it.get("tags") or [])[:3]
        out = ", ".join(str(p) for p in parts) or "no genre listed"
        return out + (f"; tags: {', '.join(tags)}" if tags else "")

    @classmethod
    def from_workdir(cls, config, workdir: str | pathlib.Path) -> ChatSession:
        """Loads a trained workdir (dataset, systems, intents) into a session
        (`chat_loading.load_session`)."""
        from latentcrs_jax.conversation import chat_loading

        return chat_loading.load_session(config, workdir)


def run_chat(
    session: ChatSession,
    lines: Iterable[str],
    write: Callable[[str], Any],
    prompt: str = "",
) -> int:
    """Feeds input lines to a session until /quit or the end of input.

    Args:
      session: the chat.
      lines: input lines (e.g. sys.stdin).
      write: output sink (e.g. sys.stdout.write); every answer ends with a new line.
      prompt: written before each input line (e.g. "> " on a terminal).

    Returns:
      The number of lines handled.
    """
    write(session.greeting() + "\n")
    handled = 0
    write(prompt)
    for line in lines:
        write(session.handle(line.rstrip("\n")) + "\n")
        handled += 1
        if session.finished:
            break
        write(prompt)
    return handled
