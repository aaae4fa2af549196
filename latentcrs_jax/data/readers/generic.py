"""The generic format for your own data: an interactions CSV plus an items CSV.

`<data_dir>/interactions.csv`, header `user_id,item_id[,rating][,timestamp]`: one row per
interaction. Without `timestamp`, file order is time order; without `rating`, every row counts
as rating 5 (so the default threshold keeps it).
`<data_dir>/items.csv`, header `item_id,title[,text][,genres][,year]`: `text` is free text
(a description), `genres` is `|`-separated. Items missing here keep only their id as title,
unless `config.data.require_metadata` drops them.
"""

from latentcrs_jax.data import items as items_lib
from latentcrs_jax.data.readers import base
from latentcrs_jax.data.readers.paths import resolve_data_dir


@base.register("generic")
def read_generic(data_config) -> base.RawData:
    """Reads `interactions.csv` and `items.csv` from the data directory."""
    root = resolve_data_dir(data_config)
    inter_path = base.require_file(root / "interactions.csv", "the generic format's interactions")
    items_path = base.require_file(root / "items.csv", "the generic format's item table")
    meta = {}
    for line_no, row in base.csv_rows(items_path, ("item_id", "title")):
        year = row.get("year", "").strip()
        meta[row["item_id"]] = items_lib.make_item(
            row["item_id"],
            row["title"],
            year=base.parse_number(year, int, "year", items_path, line_no) if year else None,
            genres=[g.strip() for g in row.get("genres", "").split("|") if g.strip()],
            description=row.get("text", ""),
        )
    buf = base.InteractionBuffer(inter_path, data_config.min_rating)
    for line_no, row in base.csv_rows(inter_path, ("user_id", "item_id")):
        rating = row.get("rating", "").strip()
        ts = row.get("timestamp", "").strip()
        buf.add(
            row["user_id"],
            row["item_id"],
            base.parse_number(rating, float, "rating", inter_path, line_no) if rating else 5.0,
            base.parse_number(ts, int, "timestamp", inter_path, line_no) if ts else line_no,
            line_no,
        )
    return buf.finish(meta, str(items_path))
