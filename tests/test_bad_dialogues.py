"""Bad input for the dialogue reader (ReDial's and the generic JSON lines, ReDial's movies CSV),
by class as `tests/test_bad_input.py` does for the data readers: non-UTF-8 bytes named at their
line (also past the first decoded block), a byte-order mark and CRLF line ends repaired,
a broken line named at its line, random corruption failing cleanly."""

import json
import random

import pytest

from latentcrs_jax.dialogues import readers
from latentcrs_jax.errors import UserInputError

N = 300  # Lines; the file is far over 8 KB, so late lines lie past the first decoded block.


def _redial(k):
    return {
        "conversationId": str(k),
        "initiatorWorkerId": 0,
        "respondentWorkerId": 1,
        "movieMentions": {"11": "Alien (1979)"},
        "messages": [
            {"senderWorkerId": 0, "text": f"I liked @11, number {k}"},
            {"senderWorkerId": 1, "text": "Try @11"},
        ],
        "initiatorQuestions": {"11": {"suggested": 0, "seen": 1, "liked": 1}},
    }


def _generic(k):
    return {
        "id": f"c{k}",
        "turns": [
            {"role": "seeker", "text": f"I loved Alien, number {k}", "items": ["Alien (1979)"]},
            {"role": "recommender", "text": "Try Heat", "items": [{"title": "Heat", "liked": 1}]},
        ],
    }


FORMATS = {"redial": _redial, "generic": _generic}


def _lines(fmt):
    return [json.dumps(FORMATS[fmt](k)).encode() for k in range(N)]


def _write(path, lines, sep=b"\n"):
    path.write_bytes(sep.join(lines) + sep)
    return path


def _read(path, fmt):
    return [
        (d.id, [(t.role, t.text, t.mentions) for t in d.turns], d.labels)
        for d in readers.read(path, fmt)
    ]


@pytest.mark.parametrize("line", [1, 2, 250])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_non_utf8_is_named_at_its_line(tmp_path, fmt, line):
    lines = _lines(fmt)
    lines[line - 1] = lines[line - 1].replace(b"Alien", b"Ali\xe9n", 1)
    path = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(UserInputError, match=rf"d\.jsonl:{line}: not (valid )?UTF-8"):
        _read(path, fmt)


@pytest.mark.parametrize("repair", ["bom", "crlf", "both"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bom_and_crlf_are_repaired(tmp_path, fmt, repair):
    clean = _read(_write(tmp_path / "clean.jsonl", _lines(fmt)), fmt)
    lines = _lines(fmt)
    if repair in ("bom", "both"):
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    sep = b"\r\n" if repair in ("crlf", "both") else b"\n"
    assert _read(_write(tmp_path / "d.jsonl", lines, sep), fmt) == clean


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_broken_line_is_named_at_its_line(tmp_path, fmt):
    lines = _lines(fmt)
    lines[6] = lines[6][: len(lines[6]) // 2]  # An unterminated string or object.
    path = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(UserInputError, match=rf"d\.jsonl:7: not a {fmt} conversation"):
        _read(path, fmt)


def test_movies_csv_quotes_are_checked_at_their_line(tmp_path):
    movies = tmp_path / "movies.csv"
    movies.write_text(
        'movieId,movieName,nbMentions\n11,Alien (1979),3\n12,"Heat (1995),1\n13,X,1\n'
    )
    with pytest.raises(UserInputError, match=r"movies\.csv:3: .*unterminated quote"):
        readers.read_movies_csv(movies)
    movies.write_bytes(b"\xef\xbb\xbfmovieId,movieName\r\n11,Alien  (1979)\r\n")
    assert readers.read_movies_csv(movies) == {"11": "Alien (1979)"}


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_corrupted_files_fail_cleanly_or_read(tmp_path, fmt, seed):
    rng = random.Random(f"{fmt}-{seed}")
    data = bytearray(b"\n".join(_lines(fmt)[:20]) + b"\n")
    for _ in range(rng.randint(1, 6)):
        pos = rng.randrange(len(data))
        byte = rng.choice(b'\x00\xff\xe9",:{}[]\n\r -9aZ\\@')
        op = rng.choice(["set", "insert", "delete"])
        if op == "set":
            data[pos] = byte
        elif op == "insert":
            data.insert(pos, byte)
        else:
            del data[pos]
    path = tmp_path / "d.jsonl"
    path.write_bytes(bytes(data))
    try:
        _read(path, fmt)
    except UserInputError as e:
        assert str(path) in str(e)
