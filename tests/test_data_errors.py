"""Bad input gives one clear error naming the file (and line where there is one)."""

import pytest
from data_helpers import data_config, write_ml_dat

from latentcrs_jax.data import prepare, readers
from latentcrs_jax.data.errors import DataError

MOVIES = [f"{i}::Movie {i} (1999)::Drama" for i in range(1, 20)]


def _ratings(n_users=3, n_items=15):
    return [f"{u}::{i}::5::{i}" for u in range(1, n_users + 1) for i in range(1, n_items + 1)]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("1::2::5", r"ratings.dat:3: expected 4 '::'-separated fields"),
        ("x1::2::5::7", r"ratings.dat:3: UserID is not a number: 'x1'"),
        ("1::2::five::7", r"ratings.dat:3: Rating is not a number"),
        ("1::99::5::7", r"ratings.dat:3: unknown item id '99' \(not in .*movies.dat\)"),
    ],
)
def test_bad_rating_lines(tmp_path, bad_line, message):
    lines = _ratings()
    lines.insert(2, bad_line)
    root = write_ml_dat(tmp_path, lines, MOVIES)
    with pytest.raises(DataError, match=message):
        prepare.build(data_config(root))


def test_bad_movie_line(tmp_path):
    root = write_ml_dat(tmp_path, _ratings(), MOVIES[:3] + ["4::Broken"] + MOVIES[4:])
    with pytest.raises(DataError, match=r"movies.dat:4: expected 3 '::'-separated fields"):
        readers.read(data_config(root))


def test_missing_file(tmp_path):
    write_ml_dat(tmp_path, _ratings(), MOVIES)
    (tmp_path / "ratings.dat").unlink()
    with pytest.raises(DataError, match=r"ratings.dat: file not found"):
        readers.read(data_config(tmp_path))


def test_missing_directory_and_empty_data_dir(tmp_path):
    with pytest.raises(DataError, match=r"nope: data directory not found"):
        readers.read(data_config(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"data_dir is empty.*--config.data.data_dir"):
        readers.read(data_config(""))


def test_empty_result_after_filtering(tmp_path):
    root = write_ml_dat(tmp_path, [f"1::{i}::3::{i}" for i in range(1, 10)], MOVIES)
    with pytest.raises(DataError, match=r"ratings.dat: no users left after filtering"):
        prepare.build(data_config(root))


def test_empty_file(tmp_path):
    root = write_ml_dat(tmp_path, [], MOVIES)
    with pytest.raises(DataError, match=r"ratings.dat: no interactions found"):
        readers.read(data_config(root))


def test_unknown_reader(tmp_path):
    with pytest.raises(DataError, match=r"unknown reader 'parquet'.*movielens_dat"):
        readers.read(data_config(tmp_path, reader="parquet"))


def test_csv_errors(tmp_path):
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating\n1,1,5\n")
    with pytest.raises(DataError, match=r"ratings.csv:1: header lacks column\(s\) \['timestamp'\]"):
        readers.read(data_config(tmp_path, reader="movielens_csv"))
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,5,3\n1,1,5\n")
    with pytest.raises(DataError, match=r"ratings.csv:3: expected 4 fields, got 3"):
        readers.read(data_config(tmp_path, reader="movielens_csv"))


def test_amazon_malformed_json(tmp_path):
    (tmp_path / "Toys.jsonl").write_text('{"user_id": "a", "parent_asin": "x", "rating": 5, ')
    (tmp_path / "meta_Toys.jsonl").write_text("")
    cfg = data_config(tmp_path, reader="amazon2023", category="Toys")
    with pytest.raises(DataError, match=r"Toys.jsonl:1: malformed JSON"):
        readers.read(cfg)
    (tmp_path / "Toys.jsonl").write_text('{"user_id": "a", "rating": 5, "timestamp": 1}\n')
    with pytest.raises(DataError, match=r"Toys.jsonl:1: missing field\(s\) \['parent_asin'\]"):
        readers.read(cfg)
    # A repeated key is an error, not "the last value wins" (nested objects too).
    for line in (
        '{"user_id": "a", "user_id": "b", "parent_asin": "x", "rating": 5, "timestamp": 1}',
        '{"user_id": "a", "parent_asin": "x", "rating": 5, "timestamp": 1, "x": {"k": 1, "k": 2}}',
    ):
        (tmp_path / "Toys.jsonl").write_text(line + "\n")
        with pytest.raises(DataError, match=r"Toys.jsonl:1: malformed JSON \(duplicate key '"):
            readers.read(cfg)


def test_config_validation(tmp_path):
    root = write_ml_dat(tmp_path, _ratings(), MOVIES)
    with pytest.raises(DataError, match="min_user_items must be >= 3"):
        prepare.build(data_config(root, min_user_items=2))
