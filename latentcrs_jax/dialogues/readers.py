"""Conversation files -> `Dialogue`s: ReDial's released schema and a generic JSON-lines format.

Both formats hold one conversation per line (JSON lines, UTF-8) and are streamed. A line that is
not a conversation of the format raises `DialogueFormatError` naming the file and the line,
unless `skip_bad_lines` is set (then it is skipped and counted in `ReadStats.bad_lines`).
Blank lines are ignored.

ReDial (Li et al., NeurIPS 2018), one conversation per line:
  {"conversationId": "391", "initiatorWorkerId": 0, "respondentWorkerId": 1,
   "movieMentions": {"203371": "Final Fantasy: The Spirits Within (2001)", ...},
   "messages": [{"messageId": 1021, "senderWorkerId": 0, "timeOffset": 0,
                 "text": "I liked @203371"}, ...],
   "initiatorQuestions": {"203371": {"suggested": 0, "seen": 1, "liked": 1}},
   "respondentQuestions": {...}}
The initiator is the seeker, the respondent the recommender. A mention is `@<movieId>` inside a
message; its title comes from `movieMentions`, else from the optional movies CSV
(`movieId,movieName,nbMentions`); titles may have double spaces, no year, or be empty or null.
Questionnaires may be empty or an empty list. The seeker's labels are `initiatorQuestions`
(`suggested` 0|1, `seen` and `liked` 0 no | 1 yes | 2 did not say).

Generic format, one conversation per line:
  {"id": "c1", "turns": [
     {"role": "seeker", "text": "I loved Alien and Heat", "items": ["Alien (1979)", "Heat"]},
     {"role": "recommender", "text": "Try The Thing",
      "items": [{"title": "Thing, The (1982)", "suggested": 1, "liked": 1}]}]}
`role` is "seeker" (or "user") or "recommender" (or "system", "assistant"); `items` lists the
items the turn mentions, each a title string or an object with `title` and/or `item_id` (the
catalogue's raw id, e.g. a MovieLens movieId, which takes precedence) and optional seeker
labels `suggested`, `seen`, `liked` (as ReDial's). `id` is optional (default: the line number).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from latentcrs_jax.data.errors import DataError
from latentcrs_jax.data.readers import base as data_readers
from latentcrs_jax.errors import UserInputError

FORMATS = ("redial", "generic")
SEEKER, RECOMMENDER = "seeker", "recommender"
_ROLES = {
    "seeker": SEEKER,
    "user": SEEKER,
    "recommender": RECOMMENDER,
    "system": RECOMMENDER,
    "assistant": RECOMMENDER,
}
_MENTION_RE = re.compile(r"@(\d+)")
_LABELS = ("suggested", "seen", "liked")


class DialogueFormatError(UserInputError, ValueError):
    """A conversation file (or one of its lines) does not follow its format."""


@dataclasses.dataclass(frozen=True)
class Mention:
    """One item a turn mentions.

    Attributes:
      ref: the conversation's key of the item (ReDial's movieId; the generic format's `item_id`,
        else its title), also the key of its labels.
      title: the title as written in the data ("" when there is none).
      item_id: a catalogue raw id given by the data (generic format), else None.
    """

    ref: str
    title: str
    item_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Labels:
    """The seeker's questionnaire for one item (None: not given)."""

    suggested: int | None = None
    seen: int | None = None
    liked: int | None = None


@dataclasses.dataclass
class Turn:
    """One message: its role, its text (mentions written as titles) and its mentions in order."""

    role: str
    text: str
    mentions: tuple[Mention, ...] = ()


@dataclasses.dataclass
class Dialogue:
    """One conversation; `source` is "file:line"; `labels` maps a mention's ref to its labels."""

    id: str
    source: str
    turns: list[Turn]
    labels: dict[str, Labels] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReadStats:
    """What a read saw: conversations, skipped bad lines (with their first errors)."""

    dialogues: int = 0
    bad_lines: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)


def clean_title(title: Any) -> str:
    """A title with runs of white space collapsed; "" for None, non-strings or blanks."""
    return " ".join(title.split()) if isinstance(title, str) else ""


def read_movies_csv(path: str | pathlib.Path) -> dict[str, str]:
    """ReDial's `movies_with_mentions.csv` (`movieId,movieName[,nbMentions]`): movieId -> title."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DialogueFormatError(f"{path}: no such movies file")
    try:  # The data readers' strict CSV: BOM, CRLF, quotes and encoding checked per line.
        return {
            str(row["movieId"]).strip(): clean_title(row["movieName"])
            for _, row in data_readers.csv_rows(path, ("movieId", "movieName"))
            if row.get("movieId")
        }
    except DataError as e:
        raise DialogueFormatError(str(e)) from None


def _labels(value: Any, where: str) -> Labels:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: labels must be an object, got {type(value).__name__}")
    out = {}
    for name in _LABELS:
        v = value.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v not in (0, 1, 2)):
            raise ValueError(f"{where}: {name} must be 0, 1 or 2, got {v!r}")
        out[name] = v
    return Labels(**out)


def _questionnaire(value: Any, name: str) -> dict[str, Labels]:
    if value is None or value == [] or value == {}:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object or an empty list")
    return {str(k): _labels(v, f"{name}[{k!r}]") for k, v in value.items()}


def parse_redial(
    record: Any, source: str, movie_titles: Mapping[str, str] | None = None
) -> Dialogue:
    """One ReDial conversation (a parsed JSON line) -> `Dialogue`; ValueError when malformed."""
    if not isinstance(record, Mapping):
        raise ValueError("a conversation must be a JSON object")
    for key in ("messages", "initiatorWorkerId", "respondentWorkerId"):
        if key not in record:
            raise ValueError(f"missing {key!r}")
    mentions = record.get("movieMentions") or {}
    if not isinstance(mentions, Mapping):
        raise ValueError("movieMentions must be an object or an empty list")
    movie_titles = movie_titles or {}
    titles = {str(k): clean_title(v) for k, v in mentions.items()}
    roles = {record["initiatorWorkerId"]: SEEKER, record["respondentWorkerId"]: RECOMMENDER}
    if len(roles) != 2:
        raise ValueError("initiatorWorkerId and respondentWorkerId must differ")
    messages = record["messages"]
    if not isinstance(messages, list):
        raise ValueError("messages must be a list")
    turns = []
    for n, msg in enumerate(messages):
        if not isinstance(msg, Mapping) or not isinstance(msg.get("text"), str):
            raise ValueError(f"message {n}: expected an object with a string 'text'")
        role = roles.get(msg.get("senderWorkerId"))
        if role is None:
            raise ValueError(f"message {n}: sender {msg.get('senderWorkerId')!r} is neither worker")
        found: dict[str, Mention] = {}
        for ref in _MENTION_RE.findall(msg["text"]):
            found.setdefault(ref, Mention(ref, titles.get(ref) or movie_titles.get(ref, "")))
        text = _MENTION_RE.sub(lambda m, found=found: found[m.group(1)].title, msg["text"])
        turns.append(Turn(role, " ".join(text.split()), tuple(found.values())))
    labels = _questionnaire(record.get("initiatorQuestions"), "initiatorQuestions")
    _questionnaire(record.get("respondentQuestions"), "respondentQuestions")  # validated only
    return Dialogue(str(record.get("conversationId", source)), source, turns, labels)


def _generic_item(value: Any, where: str) -> tuple[Mention, Labels | None]:
    if isinstance(value, str):
        return Mention(clean_title(value), clean_title(value)), None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: an item must be a title or an object")
    title = clean_title(value.get("title"))
    item_id = value.get("item_id")
    item_id = None if item_id is None else str(item_id).strip() or None
    if not title and item_id is None:
        raise ValueError(f"{where}: an item needs a title or an item_id")
    has_labels = any(value.get(k) is not None for k in _LABELS)
    labels = _labels(value, where) if has_labels else None
    return Mention(item_id or title, title, item_id), labels


def parse_generic(record: Any, source: str) -> Dialogue:
    """One conversation of the generic format -> `Dialogue`; ValueError when malformed."""
    if not isinstance(record, Mapping) or not isinstance(record.get("turns"), list):
        raise ValueError("a conversation must be an object with a 'turns' list")
    turns, labels = [], {}
    for n, turn in enumerate(record["turns"]):
        if not isinstance(turn, Mapping):
            raise ValueError(f"turn {n}: expected an object")
        role = _ROLES.get(str(turn.get("role", "")).lower())
        if role is None:
            raise ValueError(f"turn {n}: role {turn.get('role')!r} is not one of {sorted(_ROLES)}")
        text = turn.get("text", "")
        if not isinstance(text, str):
            raise ValueError(f"turn {n}: text must be a string")
        items = turn.get("items") or []
        if not isinstance(items, list):
            raise ValueError(f"turn {n}: items must be a list")
        mentions: dict[str, Mention] = {}
        for k, value in enumerate(items):
            mention, item_labels = _generic_item(value, f"turn {n} item {k}")
            mentions.setdefault(mention.ref, mention)
            if item_labels is not None:
                labels[mention.ref] = item_labels
        turns.append(Turn(role, " ".join(text.split()), tuple(mentions.values())))
    return Dialogue(str(record.get("id", source)), source, turns, labels)


def read(
    path: str | pathlib.Path,
    fmt: str = "redial",
    movies: str | pathlib.Path | None = None,
    skip_bad_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Dialogue]:
    """Streams the conversations of a JSON-lines file.

    Args:
      path: the file.
      fmt: "redial" or "generic".
      movies: ReDial's movies CSV (titles for mentions that `movieMentions` lacks).
      skip_bad_lines: skip (and count) malformed lines instead of raising.
      stats: filled in as the file is read.

    Raises:
      DialogueFormatError: at once for a missing file, a bad movies CSV or an unknown format;
        while streaming, "<file>:<line>: ..." for a malformed line (unless skipped).
    """
    if fmt not in FORMATS:
        raise DialogueFormatError(f"unknown dialogue format {fmt!r}; expected one of {FORMATS}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise DialogueFormatError(f"{path}: no such dialogue file")
    titles = read_movies_csv(movies) if movies else None
    stats = stats if stats is not None else ReadStats()
    return _stream(path, fmt, titles, skip_bad_lines, stats)


def _stream(
    path: pathlib.Path,
    fmt: str,
    titles: Mapping[str, str] | None,
    skip_bad_lines: bool,
    stats: ReadStats,
) -> Iterator[Dialogue]:
    # Decoded line by line (a text-mode file decodes whole blocks, so a bad byte's error named
    # the block's first line); a leading byte-order mark is dropped.
    lines = data_readers.text_lines(path)
    line_no = 0
    while True:
        line_no += 1
        source = f"{path}:{line_no}"
        try:
            line = next(lines, "")
        except DataError as e:
            raise DialogueFormatError(str(e)) from None
        if not line:
            return
        if not line.strip():
            continue
        try:
            record = data_readers.json_loads(line)
            if fmt == "redial":
                dialogue = parse_redial(record, source, titles)
            else:
                dialogue = parse_generic(record, source)
        except (ValueError, TypeError, RecursionError) as e:
            if not skip_bad_lines:
                raise DialogueFormatError(
                    f"{source}: not a {fmt} conversation: {e} (--skip_bad_lines skips such lines)"
                ) from e
            stats.bad_lines += 1
            if len(stats.errors) < 5:
                stats.errors.append(f"{source}: {e}")
            continue
        stats.dialogues += 1
        yield dialogue
