"""A hand-made catalogue (MovieLens title forms) covering the dialogue fixtures' movies."""

import pathlib

from latentcrs_jax.data.items import make_item

DATA = pathlib.Path(__file__).resolve().parent / "data"
REDIAL = DATA / "redial_fixture.jsonl"
REDIAL_MOVIES = DATA / "redial_movies.csv"
GENERIC = DATA / "generic_fixture.jsonl"

# (raw id, MovieLens title, year, genres); item id = position + 1.
MOVIES = [
    ("2571", "Matrix, The", 1999, "Action|Sci-Fi|Thriller"),
    ("541", "Blade Runner", 1982, "Action|Sci-Fi|Thriller"),
    ("79132", "Inception", 2010, "Action|Crime|Drama|Mystery|Sci-Fi|Thriller"),
    ("1240", "Terminator, The", 1984, "Action|Sci-Fi|Thriller"),
    ("589", "Terminator 2: Judgment Day", 1991, "Action|Sci-Fi"),
    ("293", "Léon: The Professional (a.k.a. The Professional) (Léon)", 1994, "Action|Crime"),
    ("4973", "Amelie (Fabuleux destin d'Amélie Poulain, Le)", 2001, "Comedy|Romance"),
    ("296", "Pulp Fiction", 1994, "Comedy|Crime|Drama|Thriller"),
    ("480", "Jurassic Park", 1993, "Action|Adventure|Sci-Fi|Thriller"),
    ("1", "Toy Story", 1995, "Adventure|Animation|Children|Comedy"),
    ("68954", "Up", 2009, "Adventure|Animation|Children|Drama"),
    ("78499", "Toy Story 3", 2010, "Adventure|Animation|Children|Comedy"),
    ("318", "Shawshank Redemption, The", 1994, "Crime|Drama"),
    ("356", "Forrest Gump", 1994, "Comedy|Drama|Romance|War"),
    ("3147", "Green Mile, The", 1999, "Crime|Drama"),
    ("1214", "Alien", 1979, "Horror|Sci-Fi"),
    ("1200", "Aliens", 1986, "Action|Adventure|Horror|Sci-Fi"),
    ("2288", "Thing, The", 1982, "Action|Horror|Sci-Fi|Thriller"),
    ("6", "Heat", 1995, "Action|Crime|Thriller"),
    ("58559", "Dark Knight, The", 2008, "Action|Crime|Drama"),
    ("260", "Star Wars: Episode IV - A New Hope", 1977, "Action|Adventure|Sci-Fi"),
    ("1196", "Star Wars: Episode V - The Empire Strikes Back", 1980, "Action|Adventure|Sci-Fi"),
    ("1210", "Star Wars: Episode VI - Return of the Jedi", 1983, "Action|Adventure|Sci-Fi"),
    (
        "1198",
        "Raiders of the Lost Ark (Indiana Jones and the Raiders of the Lost Ark)",
        1981,
        "Action|Adventure",
    ),
    ("1291", "Indiana Jones and the Last Crusade", 1989, "Action|Adventure"),
    ("1270", "Back to the Future", 1985, "Adventure|Comedy|Sci-Fi"),
    ("47", "Seven (a.k.a. Se7en)", 1995, "Mystery|Thriller"),
    ("593", "Silence of the Lambs, The", 1991, "Crime|Horror|Thriller"),
    ("2959", "Fight Club", 1999, "Action|Crime|Drama|Thriller"),
    ("1721", "Titanic", 1997, "Drama|Romance"),
    ("912", "Casablanca", 1942, "Drama|Romance"),
    ("1265", "Groundhog Day", 1993, "Comedy|Fantasy|Romance"),
    ("4306", "Shrek", 2001, "Adventure|Animation|Children|Comedy"),
    ("5218", "Ice Age", 2002, "Adventure|Animation|Children|Comedy"),
    ("364", "Lion King, The", 1994, "Adventure|Animation|Children|Drama"),
    ("3578", "Gladiator", 2000, "Action|Adventure|Drama"),
    ("110", "Braveheart", 1995, "Action|Drama|War"),
    ("2028", "Saving Private Ryan", 1998, "Action|Drama|War"),
    ("1213", "Goodfellas", 1990, "Crime|Drama"),
    ("858", "Godfather, The", 1972, "Crime|Drama"),
    ("48516", "Departed, The", 2006, "Crime|Drama|Thriller"),
    ("1219", "Psycho", 1960, "Crime|Horror"),
    ("904", "Rear Window", 1954, "Mystery|Thriller"),
    ("2762", "Sixth Sense, The", 1999, "Drama|Horror|Mystery"),
    ("1036", "Die Hard", 1988, "Action|Crime|Thriller"),
    ("377", "Speed", 1994, "Action|Romance|Thriller"),
    ("4226", "Memento", 2000, "Mystery|Thriller"),
    ("111759", "Edge of Tomorrow", 2014, "Action|Sci-Fi"),
    ("60069", "WALL·E", 2008, "Adventure|Animation|Children|Romance|Sci-Fi"),
    ("5618", "Spirited Away (Sen to Chihiro no kamikakushi)", 2001, "Adventure|Animation|Fantasy"),
    ("152081", "Zootopia", 2016, "Action|Adventure|Animation|Children|Comedy"),
    ("3996", "Crouching Tiger, Hidden Dragon (Wo hu cang long)", 2000, "Action|Drama|Romance"),
    (
        "1201",
        "Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il)",
        1966,
        "Action|Adventure|Western",
    ),
    ("3681", "For a Few Dollars More (Per qualche dollaro in più)", 1965, "Action|Western"),
    ("608", "Fargo", 1996, "Comedy|Crime|Drama|Thriller"),
    ("1732", "Big Lebowski, The", 1998, "Comedy|Crime"),
    ("99999", "Heat", 1986, "Action|Drama"),
]


def catalogue() -> list[dict]:
    """The items table: PAD, then MOVIES (item id = index)."""
    return [make_item("", "")] + [
        make_item(raw, title, year=year, genres=genres.split("|"))
        for raw, title, year, genres in MOVIES
    ]


def item_id(title: str) -> int:
    """Item id of a MovieLens title in MOVIES (the first one)."""
    return 1 + [t for _, t, _, _ in MOVIES].index(title)


def write_repeated(path, copies: int) -> int:
    """Writes the ReDial fixture `copies` times (ids suffixed "-<copy>", every message tagged
    "(copy <copy>)" so that every context text is distinct); returns the conversations written."""
    import json

    lines = REDIAL.read_text(encoding="utf-8").splitlines()
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for copy in range(copies):
            for line in lines:
                record = json.loads(line)
                record["conversationId"] = f"{record['conversationId']}-{copy}"
                for msg in record["messages"]:
                    msg["text"] = f"{msg['text']} (copy {copy})"
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                n += 1
    return n
