"""Tests of the chat: a scripted session through stdin-like input, bad inputs, the binary."""

import copy
import io
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from latentcrs_jax.conversation import chat
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.intent_labels import intent_labels
from latentcrs_jax.data.items import make_item
from latentcrs_jax.evaluation.recommenders import Recommender

REPO = pathlib.Path(__file__).resolve().parents[1]
CRASH = "something went wrong"

MOVIES = [
    ("Alien", 1979, ["Horror", "Sci-Fi"]),
    ("Heat", 1995, ["Action", "Crime"]),
    ("Heat", 1986, ["Action", "Drama"]),
    ("Toy Story", 1995, ["Animation", "Children", "Comedy"]),
    ("Scream", 1996, ["Horror", "Comedy"]),
    ("Clueless", 1995, ["Comedy", "Romance"]),
    ("Big Lebowski, The", 1998, ["Comedy", "Crime"]),
    ("Fargo", 1996, ["Comedy", "Crime", "Drama"]),
    ("Groundhog Day", 1993, ["Comedy", "Fantasy"]),
    ("Shining, The", 1980, ["Horror"]),
    ("Airplane!", 1980, ["Comedy"]),
    ("Amelie", 2001, ["Comedy", "Romance"]),
    ("Babe", 1995, ["Children", "Comedy"]),
    ("Se7en", 1995, ["Mystery", "Thriller"]),
    ("Casablanca", 1942, ["Drama", "Romance"]),
    ("Ghostbusters", 1984, ["Comedy", "Sci-Fi"]),
]
N = len(MOVIES)


def _items():
    return [make_item("", "")] + [
        make_item(str(100 + i), t, year=y, genres=g) for i, (t, y, g) in enumerate(MOVIES, 1)
    ]


def _session(fail=False):
    items = _items()
    vocab = FeatureVocab(items, "movies")
    rng = np.random.default_rng(0)
    base = rng.normal(size=N + 1).astype(np.float32)

    def score(histories, texts):
        if fail:
            raise RuntimeError("boom")
        assert histories.shape == (len(texts), 6) and histories.dtype == np.int32
        return np.tile(base, (len(texts), 1))

    def intents(histories, texts):
        return np.tile(np.array([[0.6, 0.3, 0.1]], np.float32), (len(texts), 1))

    emb = rng.normal(size=(N + 1, 4)).astype(np.float32)
    centroids = rng.normal(size=(3, 4)).astype(np.float32)
    names, affinity = intent_labels(centroids, emb, items, vocab, top_items=5)
    systems = {
        "latentcrs": Recommender("latentcrs", score, intents),
        "text": Recommender("text", score),
    }
    sequences = {0: np.array([1, 2, 4, 5, 6, 7, 8, 9], np.int32)}
    return chat.ChatSession(
        systems,
        items,
        "movies",
        user_raw_ids=["42"],
        user_sequence=sequences.__getitem__,
        history_len=6,
        intent_names=names,
        intent_affinity=affinity,
    )


def _listed(answer):
    """Titles of the numbered items in an answer."""
    return [
        line.split(". ", 1)[1].split(" | ")[0]
        for line in answer.splitlines()
        if line.strip()[:2].rstrip(".").isdigit()
    ]


def _genres(title):
    name, year = title.rsplit(" (", 1)
    for t, y, g in MOVIES:
        if str(y) == year.rstrip(")") and name.endswith(t.split(",")[0]):
            return g
    raise KeyError(title)


def test_scripted_session_through_stdin():
    session = _session()
    lines = io.StringIO(
        "/like Alien; Heat\n"
        "/like Heat (1995); Groundhog Dya\n"
        "a comedy, no horror\n"
        "not these\n"
        "/quit\n"
        "this line is never read\n"
    )
    out = io.StringIO()
    assert chat.run_chat(session, lines, out.write) == 5
    answers = out.getvalue()
    assert answers.startswith("Conversational recommender (latentcrs; 16 items)")
    assert "Added Alien (1979)." in answers
    assert "matches several titles: Heat (1995); Heat (1986)" in answers
    assert "Added Heat (1995)." in answers and "Added Groundhog Day (1993) (closest" in answers
    assert answers.rstrip().endswith("Bye!") and CRASH not in answers
    assert session.state.history == [1, 2, 9]
    first, second = session.state.turns[1]["items"], session.state.turns[3]["items"]
    assert len(first) == 5 and len(second) == 5
    assert not set(first) & set(second)  # "not these" pushes shown items back.
    assert not set(first + second) & {1, 2, 9}  # Liked items are never recommended.
    block = answers.split("We infer you like: Comedy (not: Horror)")[1]
    titles = _listed(block.split("Say more")[0])
    assert len(titles) == 5
    assert all("Comedy" in _genres(t) and "Horror" not in _genres(t) for t in titles)
    assert "Intents behind these (p(m|u,x)): #0 60%" in answers
    assert "| intent #" in answers
    assert session.state.ranking_text() == "a comedy, no horror"  # "not these" adds no text.


def test_user_reset_and_system_commands():
    session = _session()
    answer = session.handle("/user 42")
    assert "Chatting as user 42: 6 liked items" in answer
    assert session.state.history == [4, 5, 6, 7, 8, 9]
    assert "No user 'nobody'" in session.handle("/user nobody")
    assert "Usage: /user" in session.handle("/user")
    assert "Now recommending with text" in session.handle("/system text")
    answer = session.handle("something funny, not these 90s ones")
    assert "Intents behind" not in answer and len(_listed(answer)) == 5
    assert "Unknown system" in session.handle("/system nope")
    assert "Starting over" in session.handle("/reset")
    assert session.state.history == [] and session.state.turns == []
    assert "/user <id>" in session.handle("/help")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "   ",
        "\x00\x01\x1b[31m",
        "x" * 100_000,
        "scary " * 5000,
        "日本のアニメ映画が見たい",
        "Je voudrais une comédie romantique",
        "asdf qwer zxcv ;;; !!! ???",
        "not these",
        "no",
        "/",
        "/like",
        "/like ;;;",
        "/like " + "z" * 10_000,
        "/system",
        "/unknown command",
        "🎬🍿",
    ],
)
def test_bad_inputs_never_crash(line):
    session = _session()
    answer = session.handle(line)
    assert answer and CRASH not in answer
    assert not session.finished


def test_errors_inside_a_turn_are_reported_and_the_session_goes_on():
    session = _session(fail=True)
    assert CRASH in session.handle("a comedy")
    assert "Added Alien" in session.handle("/like Alien")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_never_poison_the_session(seed):
    """Random bytes (decoded as a pipe decodes them) give answers, never crashes, and the
    requests after them still work; the fake encoder rejects what a tokenizer rejects."""
    session = _session()
    score = session.recommenders["latentcrs"].score

    def strict_score(histories, texts):
        for text in texts:
            text.encode("utf-8")  # Lone surrogates raise, as in the real tokenizer.
        return score(histories, texts)

    session.recommenders["latentcrs"] = Recommender(
        "latentcrs", strict_score, session.recommenders["latentcrs"].intents
    )
    rng = np.random.default_rng(seed)
    garbage = rng.integers(0, 256, size=2000, dtype=np.uint8).tobytes()
    lines = ["/like Alien", *garbage.decode("utf-8", "surrogateescape").split("\n")]
    lines += [*garbage.decode("utf-8", "replace").split("\n"), "a comedy"]
    answers = [session.handle(line) for line in lines]
    assert all(answers) and not any(CRASH in a for a in answers)
    assert "We infer you like: Comedy" in answers[-1] and len(_listed(answers[-1])) == 5


def test_a_failed_turn_leaves_the_session_as_it_was():
    session = _session()
    session.handle("/like Alien")
    before = copy.deepcopy(session.state)
    session.recommenders["latentcrs"] = Recommender("latentcrs", lambda h, t: 1 / 0)
    assert CRASH in session.handle("a comedy")
    assert session.state == before  # The failed request's turn is not kept.


def test_intent_labels_name_the_intents_items():
    items = _items()
    vocab = FeatureVocab(items, "movies")
    comedy = np.array([1.0 if "Comedy" in it["genres"] else -1.0 for it in items], np.float32)
    emb = np.stack([comedy, -comedy], axis=1)
    labels, affinity = intent_labels(np.eye(2, dtype=np.float32), emb, items, vocab, 4)
    assert labels[0].startswith("Comedy") and "Comedy" not in labels[1].split(" (e.g.")[0]
    assert affinity.shape == (2, N + 1) and affinity[0, 0] == -np.inf


def test_launch_chat_reports_an_untrained_workdir(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "launch.chat", "--config=configs/tiny.py", f"--workdir={tmp_path}"],
        cwd=REPO,
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "no trained backbone" in proc.stderr and "Traceback" not in proc.stderr
