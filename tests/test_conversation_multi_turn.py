"""Tests of the multi-turn protocol: accounting on scripted dialogues, the stage on tiny data."""

import json
import random
import types

import numpy as np
import pytest

from latentcrs_jax import stage_manifest
from latentcrs_jax.conversation import (
    multi_turn,
    multi_turn_protocol,
    multi_turn_results,
    multi_turn_stage,
)
from latentcrs_jax.conversation.features import FeatureVocab
from latentcrs_jax.conversation.transcripts import read_transcripts
from latentcrs_jax.data.items import make_item
from latentcrs_jax.evaluation.recommenders import Recommender
from latentcrs_jax.simulator.state import Utterance

NUM_ITEMS = 12


def test_success_metrics_closed_form():
    m = multi_turn_protocol.success_metrics([1, 3, None, 5, 2], rounds=5)
    assert m["samples"] == 5 and m["successes"] == 4
    np.testing.assert_allclose(m["success_rate"], [0.2, 0.4, 0.6, 0.6, 0.8])
    assert m["average_turns"] == pytest.approx((1 + 3 + 5 + 5 + 2) / 5)
    empty = multi_turn_protocol.success_metrics([], rounds=3)
    assert empty["success_rate"] == [0.0, 0.0, 0.0] and empty["average_turns"] == 0.0


def test_sample_indices_are_seeded_sorted_and_capped():
    a = multi_turn_protocol.sample_indices(1000, 500, 1024)
    assert a == multi_turn_protocol.sample_indices(1000, 500, 1024)
    assert a == sorted(random.Random(1024).sample(range(1000), 500))
    assert len(set(a)) == 500 and a != multi_turn_protocol.sample_indices(1000, 500, 7)
    assert multi_turn_protocol.sample_indices(40, 500, 1) == list(range(40))
    assert multi_turn_protocol.sample_indices(40, 0, 1) == list(range(40))


def test_settings_validation():
    section = {"systems": ("latentcrs_f", "nope")}
    with pytest.raises(multi_turn.MultiTurnConfigError, match="nope"):
        multi_turn.MultiTurnSettings.from_config(section)
    with pytest.raises(multi_turn.MultiTurnConfigError, match="ranking_text"):
        multi_turn.MultiTurnSettings(ranking_text="all")
    with pytest.raises(multi_turn.MultiTurnConfigError, match="unknown multi_turn field"):
        multi_turn.MultiTurnSettings.from_config({"roundz": 3})
    s = multi_turn.MultiTurnSettings.from_config({"rounds": 3}, mask_history=False)
    assert s.rounds == 3 and not s.mask_history


def test_embedding_memo_embeds_each_text_once():
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], np.float32)

    memo = multi_turn_protocol.EmbeddingMemo(embed)
    memo.prefetch(["a", "bb", "a"])
    out = memo(["bb", "a", "ccc"])
    np.testing.assert_array_equal(out[:, 0], [2, 1, 3])
    assert calls == [["a", "bb"], ["ccc"]]


# ------------------------------------------------------------------------ scripted dialogues
def _items():
    items = [make_item("", "")]
    for i in range(1, NUM_ITEMS + 1):
        genres = ["Comedy"] if i in (4, 5) else ["Drama"]
        items.append(make_item(str(i), f"Film {chr(64 + i)}{chr(64 + i)}", genres=genres))
    return items


class KeywordRanker:
    """Scores item i as -i (item 1 first), plus 100 for the item a keyword in the text names."""

    KEYWORDS = {"zebra": 7, "yak": 11}

    def __init__(self):
        self.calls = 0

    def score(self, histories, texts):
        self.calls += 1
        scores = np.tile(-np.arange(NUM_ITEMS + 1, dtype=np.float32), (len(texts), 1))
        for row, text in enumerate(texts):
            for word, item in self.KEYWORDS.items():
                if word in text:
                    scores[row, item] += 100.0
        return scores


class ScriptedSimulator:
    """Replies from a script: sample key -> the user's text after round 1, 2, ..."""

    def __init__(self, script):
        self.script = script
        self.calls = []

    def respond_many(self, states, recommended, system_texts):
        out = []
        for state, rec, text in zip(states, recommended, system_texts):
            self.calls.append((state.sample_key, list(rec)))
            new = state.copy()
            new.rounds += 1
            new.turns.append({"role": "system", "text": text, "items": list(rec)})
            reply = self.script[state.sample_key][new.rounds - 1]
            new.turns.append({"role": "user", "text": reply, "items": []})
            out.append((new, Utterance(reply)))
        return out


def _run_scripted(systems=("latentcrs_f", "latentcrs"), **settings):
    items = _items()
    # Sample a: target 1 is ranked first at once. b: target 7 comes up when "zebra" is said
    # in the second reply. c: target 12 is never reached. d: target 9 (a comedy) is 5th in the
    # raw ranking; "comedy" lets the filter lift it. e: target 3 is 3rd: with top_k 2 the
    # filter shows it in round 2 (shown items go back), the unfiltered list never changes.
    keys = ["a", "b", "c", "d", "e"]
    targets = np.array([1, 7, 12, 5, 3], np.int32)
    first = [Utterance("hello")] * 3 + [Utterance("a comedy please"), Utterance("hi")]
    script = {k: [f"no, {k} reply {r}" for r in range(1, 5)] for k in keys}
    script["b"][1] = "no. think zebra"
    sim = ScriptedSimulator(script)
    ranker = KeywordRanker()
    recs = {"latentcrs": Recommender("latentcrs", ranker.score)}
    cfg = multi_turn.MultiTurnSettings(
        systems=systems, top_k=2, candidates=6, mask_history=False, **settings
    )
    results, dialogues = multi_turn_results.evaluate(
        recs,
        np.zeros((5, 4), np.int32),
        targets,
        keys,
        first,
        sim,
        items,
        "movies",
        cfg,
    )
    return results, dialogues, sim, ranker


def test_scripted_dialogue_success_and_turn_accounting():
    results, dialogues, sim, ranker = _run_scripted()
    rounds_f = [t.success_round for t in dialogues["latentcrs_f"]]
    rounds_raw = [t.success_round for t in dialogues["latentcrs"]]
    assert rounds_f == [1, 3, None, 1, 2]
    assert rounds_raw == [1, 3, None, None, None]
    assert results["latentcrs_f"]["success_rate"] == pytest.approx([0.4, 0.6, 0.8, 0.8, 0.8])
    assert results["latentcrs_f"]["average_turns"] == pytest.approx((1 + 3 + 5 + 1 + 2) / 5)
    assert results["latentcrs"]["success_rate"] == pytest.approx([0.2, 0.2, 0.4, 0.4, 0.4])
    assert results["latentcrs"]["average_turns"] == pytest.approx((1 + 3 + 5 + 5 + 5) / 5)
    assert results["latentcrs_f"]["label"] == "LatentCRS^F"
    # The simulator answers only open dialogues, and never after the last round.
    calls = {}
    for key, _ in sim.calls:
        calls[key] = calls.get(key, 0) + 1
    assert calls == {"b": 2 + 2, "c": 4 + 4, "e": 1 + 4, "d": 4}
    # One scoring call per system per round (all open dialogues batched together).
    assert ranker.calls == 2 * 5


def test_scripted_transcripts_show_the_dialogue():
    _, dialogues, _, _ = _run_scripted()
    e = dialogues["latentcrs_f"][4]
    assert [t["role"] for t in e.state.turns] == ["user", "system", "user", "system"]
    assert e.state.turns[1]["items"] == [1, 2]
    assert e.state.turns[3]["items"] == [3, 4]  # Items shown in round 1 pushed back.
    d = dialogues["latentcrs_f"][3]
    assert d.state.turns[1]["items"] == [4, 5]  # The comedies first: the stated feature.
    assert d.state.turns[1]["text"].startswith("We infer you like: Comedy. ")
    assert d.state.included == [("genre", "comedy")]
    c = dialogues["latentcrs"][2]
    assert c.success_round is None and c.state.rounds == 5
    assert c.state.user_texts[-1] == "no, c reply 4"
    assert dialogues["latentcrs"][0].target_title == "Film AA"
    assert c.state.turns[1]["text"] == "The recommended items are: 1 Film AA 2 Film BB"


def test_last_utterance_ranking_text_forgets_earlier_turns():
    _, dialogues, _, _ = _run_scripted(systems=("latentcrs",), ranking_text="last")
    # "zebra" is said in the second reply only, and ranked in round 3 either way.
    assert dialogues["latentcrs"][1].success_round == 3


def test_missing_recommenders_are_skipped():
    results, dialogues, _, _ = _run_scripted(systems=("latentcrs_f", "fusion_f", "backbone"))
    assert set(results) == {"latentcrs_f"} and set(dialogues) == {"latentcrs_f"}


# ---------------------------------------------------------------------- the stage, tiny data
@pytest.fixture(scope="module")
def tiny_simulated_workdir(tmp_path_factory):
    """A workdir with the tiny config prepared and simulated (no encoder, no training)."""
    from configs import tiny
    from latentcrs_jax import pipeline

    workdir = tmp_path_factory.mktemp("tiny_simulated")
    pipeline.run(tiny.get_config(), workdir, until="simulate")
    return workdir


def _fake_systems(ds, embed_calls):
    """An oracle-like text ranker (stated-feature overlap) and a history-only backbone."""
    vocab = FeatureVocab(ds.items, ds.domain)
    n = ds.num_items + 1

    def embed(texts):
        embed_calls.append(len(texts))
        return np.zeros((len(texts), 2), np.float32)

    def text_score(histories, texts):
        out = np.zeros((len(texts), n), np.float32)
        for row, text in enumerate(texts):
            stated = set(vocab.stated(text).included)
            for i in range(1, n):
                out[row, i] = len(stated & vocab.features_of(i)) - 1e-4 * i
        return out

    def backbone_score(histories, texts):
        return np.tile(np.sin(np.arange(n, dtype=np.float32)), (len(texts), 1))

    systems = {
        "latentcrs": Recommender("latentcrs", text_score),
        "backbone": Recommender("backbone", backbone_score),
    }
    return systems, types.SimpleNamespace(dataset=ds, embed=embed)


def test_stage_runs_writes_outputs_and_skips_when_complete(tiny_simulated_workdir, monkeypatch):
    from configs import tiny
    from latentcrs_jax.data import dataset
    from latentcrs_jax.evaluation import recommenders

    workdir = tiny_simulated_workdir
    ds = dataset.load(workdir / "data")
    embed_calls = []
    systems, ctx = _fake_systems(ds, embed_calls)

    def fake_load(config, wd, seed=None, wrap_embed=None):
        embed = wrap_embed(ctx.embed) if wrap_embed else ctx.embed
        return systems, types.SimpleNamespace(dataset=ctx.dataset, embed=embed)

    monkeypatch.setattr(recommenders, "load_systems", fake_load)
    config = tiny.get_config()
    config.multi_turn.num_samples = 30
    config.multi_turn.transcripts_per_system = 3
    md = multi_turn_stage.run(config, workdir)
    assert "| LatentCRS^F |" in md and "| backbone SASRec (text ignored) |" in md
    assert "fusion" not in md  # No fusion recommender: the row is skipped.
    result = json.loads((workdir / "eval" / "multi_turn.json").read_text())
    assert result["samples"] == multi_turn_protocol.sample_indices(len(ds.splits["test"]), 30, 1024)
    rows = result["systems"]
    for row in rows.values():
        sr = row["success_rate"]
        assert row["samples"] == 30 and len(sr) == 5
        assert all(a <= b for a, b in zip(sr, sr[1:]))  # SR never drops.
        # AT = 1 + sum_{r<R} (1 - SR@r): a failure counts R turns.
        assert row["average_turns"] == pytest.approx(1 + sum(1 - s for s in sr[:-1]))
    # The backbone ignores the text and is not filtered: it shows the same items every round.
    assert rows["backbone"]["success_rate"][0] == rows["backbone"]["success_rate"][-1]
    # The template simulator reveals attributes, so the feature ranker gains over the rounds.
    assert rows["latentcrs_f"]["success_rate"][-1] > rows["latentcrs_f"]["success_rate"][0]
    assert rows["latentcrs_f"]["success_rate"][-1] >= rows["backbone"]["success_rate"][-1]
    # One embedding call per round at most: texts of a round are embedded together.
    assert 1 <= len(embed_calls) <= 5
    transcripts = read_transcripts(workdir / "eval" / "transcripts" / "latentcrs_f.jsonl")
    assert len(transcripts) == 3
    assert [t.sample_index for t in transcripts] == result["samples"][:3]
    for t in transcripts:
        assert t.state.turns[0]["role"] == "user"
        assert t.sample_key == ds.sample_key("test", t.sample_index)
        shown = [i for turn in t.state.turns if turn["role"] == "system" for i in turn["items"]]
        assert (t.target in shown) == (t.success_round is not None)
    fp_dir = multi_turn_stage.stage_dir(workdir)
    assert stage_manifest.read(fp_dir) is not None

    # Complete: the second run reads the table back without loading anything.
    def fail(*args, **kwargs):
        raise AssertionError("load_systems called for a complete stage")

    monkeypatch.setattr(recommenders, "load_systems", fail)
    assert multi_turn_stage.run(config, workdir) == md
    config.multi_turn.item_chunk = 7  # Speed only: the stage stays complete.
    assert multi_turn_stage.run(config, workdir) == md
    # A changed setting is a different fingerprint: the stage runs again.
    config.multi_turn.rounds = 2
    monkeypatch.setattr(recommenders, "load_systems", fake_load)
    md2 = multi_turn_stage.run(config, workdir)
    assert "SR@2 | AT |" in md2 and "SR@3" not in md2
