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
    meta = base.ItemTable(items_path)
    for line_no, row in base.csv_rows(items_path, ("item_id", "title")):
        year = row.get("year", "").strip()
        item_id = base.parse_id(row["item_id"], "item_id", items_path, line_no)
        record = items_lib.make_item(
            item_id,
            row["title"],
            year=base.parse_number(year, int, "year", items_path, line_no, 0) if year else None,
            genres=[g.strip() for g in row.get("genres", "").split("|") if g.strip()],
            description=row.get("text", ""),
        )
        meta.add(item_id, record, line_no)
    meta.warn()
    buf = base.InteractionBuffer(inter_path, data_config.min_rating)
    for line_no, row in base.csv_rows(inter_path, ("user_id", "item_id")):
        rating = row.get("rating", "").strip()
        ts = row.get("timestamp", "").strip()
        buf.add(
            base.parse_id(row["user_id"], "user_id", inter_path, line_no),
            base.parse_id(row["item_id"], "item_id", inter_path, line_no),
            base.parse_number(rating, float, "rating", inter_path, line_no, 0) if rating else 5.0,
            base.parse_number(ts, int, "timestamp", inter_path, line_no, 0) if ts else line_no,
            line_no,
        )
    return buf.finish(meta, str(items_path))
