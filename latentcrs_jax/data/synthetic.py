"""A synthetic dataset in the generic CSV format (`interactions.csv` + `items.csv`), any size.

Structure (all draws from numpy generators seeded by `seed`, so a size and seed give
byte-identical files):
  tastes      T latent tastes; every item belongs to one (uniformly at random).
  popularity  Zipf: the item of popularity rank r is drawn with weight r ** -zipf, ranks
              shuffled over item ids (so ids say nothing); inside a taste, items are drawn in
              proportion to their weight.
  users       a taste mixture each, Dirichlet(concentration) over the T tastes; a sequence is a
              Markov chain over tastes (keep the current taste with probability `stay`, else
              draw a new one from the user's mixture), one item per step from the taste, a
              repeat within the user redrawn up to 3 times: consecutive items share a taste far
              more often than chance, so a sequential model has something to learn.
  lengths     5 + a geometric tail, mean `mean_length`, capped at 50 x the mean.
  timestamps  per user, increasing: a start within 3 years, gaps of at least one second.
  items       title, text and genre built from word lists of the item's taste, and a year.

Memory is O(items + one chunk of users x their longest sequence); rows are written chunk by
chunk. Users are `1..U`, items `1..N` (items nobody drew are still listed in items.csv).
"""

import dataclasses
import pathlib
from collections.abc import Iterator

import numpy as np
from absl import logging

from latentcrs_jax.errors import UserInputError

MIN_LENGTH = 5  # The default `data.min_user_items`: shorter users would be dropped.
_CHUNK_USERS = 20_000  # Users per generated chunk (part of the output's definition).
_T0 = 1_500_000_000  # First possible timestamp (2017-07-14).


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_GENRES = _words(
    "Drama Comedy Thriller Romance Horror Documentary Western Fantasy Mystery Adventure "
    "Animation Musical Crime Biography History War Sport Family Noir Satire"
)
_ADJECTIVES = _words(
    "Silent Golden Broken Hidden Last Crimson Frozen Wild Distant Secret Burning Quiet Lost "
    "Bright Dark Endless Hollow Iron Little Midnight Northern Pale Restless Savage Shining "
    "Stolen Summer Velvet Wandering Winter Electric Gentle Bitter Sacred Falling Rising"
)
_NOUNS = _words(
    "River Kingdom Garden Letter Highway Mirror Harbor Empire Orchard Station Lantern Forest "
    "Island Mountain Machine Promise Shadow Storm Voyage Castle Desert Echo Frontier Journey "
    "Legend Melody Ocean Planet Prophecy Signal Stranger Tower Valley Witness Circus Compass"
)
_THEMES = _words(
    "family loyalty revenge friendship ambition memory betrayal freedom survival love faith "
    "power greed courage exile identity justice hope grief youth"
)


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Sizes and structure of a synthetic dataset (see the module docstring)."""

    num_users: int
    num_items: int
    mean_length: float = 20.0
    seed: int = 0
    num_tastes: int = 16
    stay: float = 0.8
    zipf: float = 1.0
    concentration: float = 0.3

    def validate(self) -> None:
        """Raises UserInputError naming the first unusable field."""
        if self.num_users < 1:
            raise UserInputError(f"--num_users must be >= 1, got {self.num_users}")
        if self.num_items < 2 * MIN_LENGTH:
            raise UserInputError(f"--num_items must be >= {2 * MIN_LENGTH}, got {self.num_items}")
        if not MIN_LENGTH <= self.mean_length <= self.num_items / 2:
            raise UserInputError(
                f"--mean_length must be in [{MIN_LENGTH}, num_items / 2 = {self.num_items / 2}]"
                f" (prepare keeps users with {MIN_LENGTH}+ items), got {self.mean_length}"
            )
        if not 1 <= self.num_tastes <= self.num_items:
            raise UserInputError(f"--num_tastes must be in [1, num_items], got {self.num_tastes}")
        if not 0.0 <= self.stay < 1.0 or self.zipf < 0 or self.concentration <= 0:
            raise UserInputError(
                f"need 0 <= stay < 1, zipf >= 0, concentration > 0; got stay={self.stay}, "
                f"zipf={self.zipf}, concentration={self.concentration}"
            )


@dataclasses.dataclass(frozen=True)
class Catalogue:
    """taste int32[N], weight float64[N] (Zipf), and the per-taste sampling table: items
    `by_taste` int32[N] grouped by taste, `cdf` float64[N] = taste + cumulative share inside
    the taste (increasing), so `by_taste[searchsorted(cdf, t + u)]` draws from taste t."""

    taste: np.ndarray
    weight: np.ndarray
    by_taste: np.ndarray
    cdf: np.ndarray


def catalogue(cfg: SynthConfig) -> Catalogue:
    """The items' tastes and popularity (item id = index + 1)."""
    rng = np.random.default_rng([cfg.seed, 0])
    n = cfg.num_items
    taste = rng.integers(0, cfg.num_tastes, n).astype(np.int32)
    taste[rng.permutation(n)[: cfg.num_tastes]] = np.arange(cfg.num_tastes)  # none empty
    weight = np.arange(1, n + 1, dtype=np.float64)[rng.permutation(n)] ** -cfg.zipf
    by_taste = np.argsort(taste, kind="stable").astype(np.int32)
    w = weight[by_taste]
    t = taste[by_taste]
    totals = np.bincount(t, weights=w, minlength=cfg.num_tastes)
    cdf = t + (np.cumsum(w) - np.concatenate([[0.0], np.cumsum(totals)])[t]) / totals[t]
    return Catalogue(taste=taste, weight=weight, by_taste=by_taste, cdf=cdf)


def _draw(cat: Catalogue, tastes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item (1-based) per entry of `tastes`, by popularity inside the taste."""
    u = rng.random(tastes.shape)
    pos = np.searchsorted(cat.cdf, tastes + np.minimum(u, 1 - 1e-12), side="right")
    return cat.by_taste[np.minimum(pos, len(cat.cdf) - 1)] + 1


def _redraw_repeats(items, tastes, valid, cat, rng, rounds: int = 3) -> None:
    """Redraws (in place) items that repeat an earlier one of the same row."""
    width = items.shape[1]
    for _ in range(rounds):
        keys = np.where(valid, items, -np.arange(1, width + 1))  # padding never repeats
        order = np.argsort(keys, axis=1, kind="stable")
        ranked = np.take_along_axis(keys, order, axis=1)
        dup_sorted = np.zeros_like(valid)
        dup_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        dup = np.zeros_like(valid)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        if not dup.any():
            return
        items[dup] = _draw(cat, tastes[dup], rng)


def interaction_chunks(
    cfg: SynthConfig, cat: Catalogue
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Chunks of rows (user int64[R], item int64[R], timestamp int64[R]), users in order and
    each user's rows in time order."""
    for c, first in enumerate(range(0, cfg.num_users, _CHUNK_USERS)):
        rng = np.random.default_rng([cfg.seed, 1, c])
        m = min(_CHUNK_USERS, cfg.num_users - first)
        extra = cfg.mean_length - MIN_LENGTH
        tail = rng.geometric(1.0 / (extra + 1), m) - 1 if extra > 0 else np.zeros(m, np.int64)
        cap = min(cfg.num_items // 2, int(50 * cfg.mean_length))
        lengths = np.minimum(MIN_LENGTH + tail, cap)
        width = int(lengths.max())
        mix = rng.dirichlet(np.full(cfg.num_tastes, cfg.concentration), m)
        mix_cdf = np.cumsum(mix, axis=1)
        mix_cdf[:, -1] = 1.0
        tastes = np.empty((m, width), np.int64)
        for s in range(width):
            fresh = (mix_cdf < rng.random((m, 1))).sum(1)
            keep = rng.random(m) < cfg.stay if s else np.zeros(m, bool)
            tastes[:, s] = np.where(keep, tastes[:, s - 1] if s else 0, fresh)
        valid = np.arange(width)[None, :] < lengths[:, None]
        items = np.zeros((m, width), np.int64)
        items[valid] = _draw(cat, tastes[valid], rng)
        _redraw_repeats(items, tastes, valid, cat, rng)
        start = _T0 + rng.integers(0, 3 * 365 * 86400, m)
        gaps = 1 + rng.exponential(86400.0, (m, width)).astype(np.int64)
        stamps = start[:, None] + np.cumsum(gaps, axis=1)
        users = np.broadcast_to(np.arange(first + 1, first + m + 1)[:, None], (m, width))
        yield users[valid], items[valid], stamps[valid]


def _item_lines(cfg: SynthConfig, cat: Catalogue) -> Iterator[str]:
    """items.csv rows: `item_id,title,text,genres,year` (no field holds a comma or quote)."""
    rng = np.random.default_rng([cfg.seed, 2])
    adj_of = rng.integers(0, len(_ADJECTIVES), (cfg.num_tastes, 6))  # words of each taste
    noun_of = rng.integers(0, len(_NOUNS), (cfg.num_tastes, 6))
    theme_of = rng.integers(0, len(_THEMES), (cfg.num_tastes, 3))
    for first in range(0, cfg.num_items, 100_000):
        ids = np.arange(first, min(first + 100_000, cfg.num_items))
        t = cat.taste[ids]
        picks = rng.integers(0, 6, (len(ids), 3))
        theme = rng.integers(0, 3, len(ids))
        years = rng.integers(1950, 2025, len(ids))
        for j, i in enumerate(ids):
            tt = t[j]
            adj, noun = _ADJECTIVES[adj_of[tt, picks[j, 0]]], _NOUNS[noun_of[tt, picks[j, 1]]]
            other = _NOUNS[noun_of[tt, picks[j, 2]]].lower()
            genre = _GENRES[tt % len(_GENRES)]
            if tt >= len(_GENRES):
                genre += f" {tt // len(_GENRES) + 1}"
            yield (
                f"{i + 1},The {adj} {noun} {i + 1},A {genre.lower()} story of "
                f"{_THEMES[theme_of[tt, theme[j]]]} and a {other}.,{genre},{years[j]}\n"
            )


def write(cfg: SynthConfig, out_dir: str | pathlib.Path) -> dict:
    """Writes `interactions.csv` and `items.csv` into `out_dir` (created); returns counts."""
    cfg.validate()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cat = catalogue(cfg)
    with open(out / "items.csv", "w", encoding="utf-8", newline="") as f:
        f.write("item_id,title,text,genres,year\n")
        f.writelines(_item_lines(cfg, cat))
    rows = 0
    with open(out / "interactions.csv", "w", encoding="utf-8", newline="") as f:
        f.write("user_id,item_id,timestamp\n")
        for users, items, stamps in interaction_chunks(cfg, cat):
            f.write("".join(map("{},{},{}\n".format, users, items, stamps)))
            rows += len(users)
            logging.info("synthesize: %d interactions written", rows)
    logging.info(
        "synthesize: %d users, %d items, %d rows in %s", cfg.num_users, cfg.num_items, rows, out
    )
    return {"users": cfg.num_users, "items": cfg.num_items, "interactions": rows}
