"""Bad input by class, generated for every data reader: each case is rejected with a
`DataError` naming the file and line (or the column), or repaired and read as the clean file.

Classes: values that parse but are invalid (nan, inf, negative, out of range, not numbers),
non-UTF-8 bytes, a leading byte-order mark and CRLF line ends (repaired), unterminated
quotes, oversized fields, empty ids, repeated item ids (first kept, counted) and randomly
corrupted files (a `DataError` or a clean read, never another exception).
"""

import dataclasses
import json
import random

import pytest
from data_helpers import data_config

from latentcrs_jax.data import prepare, readers
from latentcrs_jax.data.errors import DataError
from latentcrs_jax.data.readers import base

BAD = "\x00BAD\x00"  # Placeholder replaced by a non-UTF-8 byte after encoding.
USERS, ITEMS = 3, 8


@dataclasses.dataclass
class Table:
    """One file of a reader: its format, columns and rows of field texts."""

    name: str
    kind: str  # "dat" | "csv" | "jsonl"
    columns: tuple[str, ...]
    rows: list[dict]
    numeric: tuple[str, ...] = ()  # Columns parsed as numbers.
    text: str = ""  # A free-text column (titles).
    ids: tuple[str, ...] = ()  # Id columns that must not be empty.
    item_id: str = ""  # The item-id column of an item table (repeats are counted).

    def line_of(self, row: int) -> int:
        return row + (2 if self.kind == "csv" else 1)

    def render(self) -> bytes:
        if self.kind == "dat":
            lines = ["::".join(r[c] for c in self.columns) for r in self.rows]
        elif self.kind == "csv":
            lines = [",".join(self.columns)]
            lines += [",".join(_csv_field(r[c]) for c in self.columns) for r in self.rows]
        else:
            lines = [
                "{" + ", ".join(f'"{c}": {r[c]}' for c in self.columns) + "}" for r in self.rows
            ]
        return ("\n".join(lines) + "\n").encode("utf-8").replace(BAD.encode(), b"\xff")


def _csv_field(text: str) -> str:
    if text.startswith('"'):  # Already quoted (or deliberately broken) by the test.
        return text
    return f'"{text}"' if "," in text else text


def _q(text: str) -> str:
    """A JSON string token (the jsonl tables hold JSON tokens)."""
    return json.dumps(text)


def _interactions(user, item, rating, ts, q=str):
    return [
        {user: q(f"{u}"), item: q(f"{i}"), rating: "5", ts: str(100 * u + i)}
        for u in range(1, USERS + 1)
        for i in range(1, ITEMS)
    ]


def _titles(key, title, q=str, extra=None):
    return [
        {key: q(f"{i}"), title: q(f"Movie {i} (1999)"), **(extra or {})}
        for i in range(1, ITEMS + 1)
    ]


def movielens_dat():
    ratings = ("UserID", "MovieID", "Rating", "Timestamp")
    return {
        "ratings.dat": Table("ratings.dat", "dat", ratings, _interactions(*ratings), ratings),
        "movies.dat": Table(
            "movies.dat",
            "dat",
            ("MovieID", "Title", "Genres"),
            _titles("MovieID", "Title", extra={"Genres": "Drama"}),
            ("MovieID",),
            "Title",
            item_id="MovieID",
        ),
    }


def movielens_csv():
    ratings = ("userId", "movieId", "rating", "timestamp")
    return {
        "ratings.csv": Table("ratings.csv", "csv", ratings, _interactions(*ratings), ratings),
        "movies.csv": Table(
            "movies.csv",
            "csv",
            ("movieId", "title", "genres"),
            _titles("movieId", "title", extra={"genres": "Drama|Comedy"}),
            ("movieId",),
            "title",
            item_id="movieId",
        ),
        "tags.csv": Table(
            "tags.csv",
            "csv",
            ("userId", "movieId", "tag", "timestamp"),
            [
                {"userId": "1", "movieId": str(i), "tag": f"tag {i}", "timestamp": "5"}
                for i in (1, 2, 3)
            ],
            text="tag",
        ),
    }


def generic():
    inter = ("user_id", "item_id", "rating", "timestamp")
    rows = [{**r, "user_id": f"u{r['user_id']}"} for r in _interactions(*inter)]
    items = _titles("item_id", "title", extra={"text": "A text.", "genres": "Jazz", "year": "1999"})
    return {
        "interactions.csv": Table(
            "interactions.csv", "csv", inter, rows, ("rating", "timestamp"), ids=inter[:2]
        ),
        "items.csv": Table(
            "items.csv",
            "csv",
            ("item_id", "title", "text", "genres", "year"),
            items,
            ("year",),
            "title",
            ids=("item_id",),
            item_id="item_id",
        ),
    }


def amazon():
    reviews = ("user_id", "parent_asin", "rating", "timestamp")
    return {
        "Toys.jsonl": Table(
            "Toys.jsonl",
            "jsonl",
            reviews,
            _interactions(*reviews, q=_q),
            ("rating", "timestamp"),
            ids=reviews[:2],
        ),
        "meta_Toys.jsonl": Table(
            "meta_Toys.jsonl",
            "jsonl",
            ("parent_asin", "title"),
            _titles("parent_asin", "title", q=_q),
            text="title",
            ids=("parent_asin",),
            item_id="parent_asin",
        ),
    }


READERS = {
    "movielens_dat": movielens_dat,
    "movielens_csv": movielens_csv,
    "generic": generic,
    "amazon2023": amazon,
}


def _config(root, reader):
    return data_config(root, reader=reader, category="Toys", min_rating=0.0)


def _write(root, tables, raw=None):
    for name, table in tables.items():
        data = raw[name] if raw and name in raw else table.render()
        (root / name).write_bytes(data)


def _read(root, reader):
    raw = readers.read(_config(root, reader))
    return raw.users, raw.items, raw.ratings.tolist(), raw.timestamps.tolist(), raw.item_meta


def _clean(tmp_path, reader):
    root = tmp_path / "clean"
    root.mkdir()
    _write(root, READERS[reader]())
    return _read(root, reader)


def _cases(attr):
    return [
        (reader, name, column)
        for reader, make in READERS.items()
        for name, table in make().items()
        for column in getattr(table, attr)
    ]


BAD_NUMBERS = ["nan", "inf", "-inf", "1e999", "-1", "abc", "99999999999999999999999"]


@pytest.mark.parametrize("bad", BAD_NUMBERS)
@pytest.mark.parametrize("reader, name, column", _cases("numeric"))
def test_invalid_numbers_are_rejected_at_their_line(tmp_path, reader, name, column, bad):
    if column in ("rating", "Rating") and bad == "99999999999999999999999":
        pytest.skip("a large finite rating is a valid float")
    tables = READERS[reader]()
    table = tables[name]
    token = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "abc": '"abc"'}
    table.rows[2][column] = token.get(bad, bad) if table.kind == "jsonl" else bad
    _write(tmp_path, tables)
    why = r"(is not a (finite )?number|must be >= 0|is out of range)"
    with pytest.raises(DataError, match=rf"{name}:{table.line_of(2)}: {column} {why}"):
        readers.read(_config(tmp_path, reader))


@pytest.mark.parametrize("reader", [r for r in READERS if r != "movielens_dat"])
def test_non_utf8_bytes_name_file_and_line(tmp_path, reader):
    for name, table in READERS[reader]().items():
        tables = READERS[reader]()
        column = tables[name].text or tables[name].columns[0]
        row = tables[name].rows[2]
        row[column] = row[column][:1] + BAD + row[column][1:]
        _write(tmp_path, tables)
        with pytest.raises(DataError, match=rf"{name}:{table.line_of(2)}: not valid UTF-8"):
            readers.read(_config(tmp_path, reader))


def test_dat_files_are_latin1_by_format(tmp_path):
    tables = movielens_dat()
    tables["movies.dat"].rows[0]["Title"] = "Am\xe9lie (2001)"
    root = tmp_path / "d"
    root.mkdir()
    for name, table in tables.items():
        (root / name).write_bytes(table.render().decode("utf-8").encode("latin-1"))
    assert readers.read(_config(root, "movielens_dat")).item_meta["1"]["title"] == "Amélie"


@pytest.mark.parametrize("repair", ["bom", "crlf", "both"])
@pytest.mark.parametrize("reader", list(READERS))
def test_bom_and_crlf_are_repaired(tmp_path, reader, repair):
    tables = READERS[reader]()
    raw = {}
    for name, table in tables.items():
        data = table.render()
        if repair in ("crlf", "both"):
            data = data.replace(b"\n", b"\r\n")
        if repair in ("bom", "both"):
            data = b"\xef\xbb\xbf" + data
        raw[name] = data
    _write(tmp_path, tables, raw)
    assert _read(tmp_path, reader) == _clean(tmp_path, reader)


@pytest.mark.parametrize("reader", list(READERS))
def test_unterminated_quote_is_reported_where_it_starts(tmp_path, reader):
    for name, table in READERS[reader]().items():
        tables = READERS[reader]()
        column = tables[name].text or tables[name].columns[-1]
        if table.kind == "dat":  # `::` files have no quoting: a quote is part of the text.
            continue
        tables[name].rows[2][column] = '"never closed'
        _write(tmp_path, tables)
        why = "unterminated quote" if table.kind == "csv" else "malformed JSON"
        with pytest.raises(DataError, match=rf"{name}:{table.line_of(2)}: .*{why}"):
            readers.read(_config(tmp_path, reader))


@pytest.mark.parametrize("reader", list(READERS))
def test_oversized_fields(tmp_path, reader):
    """CSV fields over the csv module's limit are errors at their line; other formats read."""
    for name, table in READERS[reader]().items():
        if not table.text:
            continue
        tables = READERS[reader]()
        long = "x" * (base.MAX_FIELD_CHARS + 10)
        tables[name].rows[1][table.text] = _q(long) if table.kind == "jsonl" else long
        _write(tmp_path, tables)
        if table.kind == "csv":
            with pytest.raises(DataError, match=rf"{name}:{table.line_of(1)}: a field longer"):
                readers.read(_config(tmp_path, reader))
        else:
            readers.read(_config(tmp_path, reader))


@pytest.mark.parametrize("reader, name, column", _cases("ids"))
def test_empty_ids_are_rejected(tmp_path, reader, name, column):
    tables = READERS[reader]()
    table = tables[name]
    table.rows[4][column] = '""' if table.kind == "jsonl" else ""
    _write(tmp_path, tables)
    with pytest.raises(DataError, match=rf"{name}:{table.line_of(4)}: {column} .*empty"):
        readers.read(_config(tmp_path, reader))


@pytest.mark.parametrize("reader", list(READERS))
def test_repeated_item_ids_keep_the_first_row_and_are_counted(tmp_path, reader, monkeypatch):
    warnings = []
    monkeypatch.setattr(base.logging, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    tables = READERS[reader]()
    (table,) = [t for t in tables.values() if t.item_id]
    for k in (0, 1):
        repeat = dict(table.rows[k])
        repeat[table.text] = _q("Another title") if table.kind == "jsonl" else "Another title"
        table.rows.append(repeat)
    _write(tmp_path, tables)
    assert _read(tmp_path, reader) == _clean(tmp_path, reader)
    line = table.line_of(ITEMS)
    assert warnings == [
        f"{tmp_path / table.name}: 2 row(s) repeat an item id already read; the first row of "
        f"each id is kept (first repeat: id '1' on line {line})"
    ]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reader", list(READERS))
def test_corrupted_files_fail_cleanly_or_read(tmp_path, reader, seed):
    """Random byte edits, insertions and truncations: a DataError or a dataset, nothing else."""
    rng = random.Random(f"{reader}-{seed}")
    tables = READERS[reader]()
    raw = {}
    for name, table in tables.items():
        data = bytearray(table.render())
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            op = rng.choice(["set", "insert", "delete"])
            byte = rng.choice(b'\x00\xff\xe9",:{}\n\r\t -.9aZ\\')
            if op == "set":
                data[pos] = byte
            elif op == "insert":
                data.insert(pos, byte)
            else:
                del data[pos]
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        raw[name] = bytes(data)
    _write(tmp_path, tables, raw)
    try:
        prepare.build(_config(tmp_path, reader))
    except DataError as e:
        assert str(tmp_path) in str(e), e  # Names the file.
