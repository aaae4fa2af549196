"""MovieLens readers: ML-1M `.dat` (latin-1, `::`) and the CSV releases (ml-latest-small...).

Item records: title (year stripped), year, genres ("(no genres listed)" -> none) and, for the
CSV releases with a tags.csv, the `max_tags` most frequent user tags of each movie.
"""

import collections
import pathlib

from latentcrs_jax.data import items as items_lib
from latentcrs_jax.data.errors import DataError
from latentcrs_jax.data.readers import base
from latentcrs_jax.data.readers.paths import resolve_data_dir


def _genres(text: str) -> list[str]:
    return [g for g in text.strip().split("|") if g and g != "(no genres listed)"]


def _movie(raw_id: str, title_year: str, genres: str, tags: list[str]) -> dict:
    title, year = items_lib.split_title_year(title_year)
    return items_lib.make_item(raw_id, title, year=year, genres=_genres(genres), tags=tags)


def _dat_rows(path: pathlib.Path, columns: tuple[str, ...]):
    """Yields (line_no, fields) of a `::`-separated latin-1 file, checking the field count."""
    with path.open(encoding="latin-1") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if line_no == 1:
                line = line.removeprefix("\xef\xbb\xbf")  # A UTF-8 byte-order mark.
            if not line:
                continue
            fields = line.split("::")
            if len(fields) != len(columns):
                raise DataError(
                    f"expected {len(columns)} '::'-separated fields ({'::'.join(columns)}), "
                    f"got {len(fields)}",
                    str(path),
                    line_no,
                )
            yield line_no, fields


@base.register("movielens_dat")
def read_dat(data_config) -> base.RawData:
    """Reads ML-1M style `ratings.dat` + `movies.dat` (`::`-separated, ISO-8859-1)."""
    root = resolve_data_dir(data_config)
    movies_path = base.require_file(root / "movies.dat")
    ratings_path = base.require_file(root / "ratings.dat")
    meta = base.ItemTable(movies_path)
    for line_no, (movie, title, genres) in _dat_rows(movies_path, ("MovieID", "Title", "Genres")):
        movie = str(base.parse_number(movie, int, "MovieID", movies_path, line_no, minimum=0))
        meta.add(movie, _movie(movie, title, genres, []), line_no)
    meta.warn()
    buf = base.InteractionBuffer(ratings_path, data_config.min_rating)
    columns = ("UserID", "MovieID", "Rating", "Timestamp")
    for line_no, fields in _dat_rows(ratings_path, columns):
        user, item, rating, ts = (
            base.parse_number(value, kind, name, ratings_path, line_no, minimum=0)
            for value, kind, name in zip(fields, (int, int, float, int), columns)
        )
        buf.add(str(user), str(item), rating, ts, line_no)
    return buf.finish(meta, str(movies_path), strict_items=True)


def _top_tags(tags_path: pathlib.Path, max_tags: int) -> dict[str, list[str]]:
    """Most frequent (lower-cased) user tags per movie; ties broken alphabetically."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, row in base.csv_rows(tags_path, ("movieId", "tag")):
        tag = " ".join(row["tag"].lower().split())
        if tag:
            counts[row["movieId"]][tag] += 1
    return {
        movie: [t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:max_tags]]
        for movie, c in counts.items()
    }


@base.register("movielens_csv")
def read_csv(data_config) -> base.RawData:
    """Reads MovieLens CSV releases: ratings.csv, movies.csv and, if present, tags.csv."""
    root = resolve_data_dir(data_config)
    movies_path = base.require_file(root / "movies.csv")
    ratings_path = base.require_file(root / "ratings.csv")
    tags_path = root / "tags.csv"
    tags = _top_tags(tags_path, data_config.max_tags) if tags_path.is_file() else {}
    meta = base.ItemTable(movies_path)
    for line_no, row in base.csv_rows(movies_path, ("movieId", "title", "genres")):
        movie = str(base.parse_number(row["movieId"], int, "movieId", movies_path, line_no, 0))
        meta.add(movie, _movie(movie, row["title"], row["genres"], tags.get(movie, [])), line_no)
    meta.warn()
    buf = base.InteractionBuffer(ratings_path, data_config.min_rating)
    for line_no, row in base.csv_rows(ratings_path, ("userId", "movieId", "rating", "timestamp")):
        user = str(base.parse_number(row["userId"], int, "userId", ratings_path, line_no, 0))
        item = str(base.parse_number(row["movieId"], int, "movieId", ratings_path, line_no, 0))
        rating = base.parse_number(row["rating"], float, "rating", ratings_path, line_no, 0)
        ts = base.parse_number(row["timestamp"], int, "timestamp", ratings_path, line_no, 0)
        buf.add(user, item, rating, ts, line_no)
    return buf.finish(meta, str(movies_path), strict_items=True)
