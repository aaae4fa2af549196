"""Amazon Reviews 2023 reader: `<Category>.jsonl` reviews + `meta_<Category>.jsonl`.

Both files are streamed line by line (the real ones are GBs; `.jsonl.gz` also works). Only
metadata rows of items that occur in the kept reviews are held in memory. The item key is
`parent_asin` by default (variants of one product share its metadata row); the authors keyed
reviews by `asin` (`config.data.amazon_item_key = "asin"` reproduces that).
"""

import json
import pathlib

from latentcrs_jax.data import items as items_lib
from latentcrs_jax.data.errors import DataError
from latentcrs_jax.data.readers import base
from latentcrs_jax.data.readers.paths import resolve_data_dir


def _find(root: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (root / name).is_file():
            return root / name
    raise DataError("file not found (also tried .jsonl.gz)", str(root / f"{stem}.jsonl"))


def _records(path: pathlib.Path, required: tuple[str, ...]):
    """Yields (line_no, record) for every non-empty line, checking JSON and required keys."""
    for line_no, line in enumerate(base.text_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = base.json_loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg})", str(path), line_no) from None
        except base.DuplicateKeyError as e:
            raise DataError(f"malformed JSON ({e})", str(path), line_no) from None
        except RecursionError:
            raise DataError("malformed JSON (nested too deeply)", str(path), line_no) from None
        if not isinstance(record, dict):
            raise DataError("expected a JSON object", str(path), line_no)
        missing = [k for k in required if k not in record]
        if missing:
            raise DataError(f"missing field(s) {missing}", str(path), line_no)
        yield line_no, record


def _id(record: dict, key: str, path: pathlib.Path, line: int) -> str:
    """A raw id: a non-empty string or number (not null, a list or an object)."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DataError(f"{key} must be a string, got {json.dumps(value)[:80]}", str(path), line)
    return base.parse_id(str(value), key, path, line)


def _clean_list(values) -> list[str]:
    if not isinstance(values, list):
        return []
    return [str(v).strip() for v in values if str(v).strip()]


def meta_to_item(raw_id: str, record: dict, category_name: str) -> dict:
    """Builds an item record: title, categories (top level dropped), description[0], features."""
    categories = _clean_list(record.get("categories"))
    top = {category_name.replace("_", " ").lower(), str(record.get("main_category", "")).lower()}
    if categories and categories[0].lower() in top:
        categories = categories[1:]
    description = _clean_list(record.get("description"))
    return items_lib.make_item(
        raw_id,
        str(record.get("title") or ""),
        categories=categories,
        description=description[0] if description else "",
        features=_clean_list(record.get("features")),
    )


@base.register("amazon2023")
def read_amazon(data_config) -> base.RawData:
    """Reads the reviews and metadata of one Amazon Reviews 2023 category."""
    if not data_config.category:
        raise DataError("config.data.category must name the Amazon category, e.g. Video_Games")
    root = resolve_data_dir(data_config)
    reviews_path = _find(root, data_config.category)
    meta_path = _find(root, f"meta_{data_config.category}")
    key = data_config.get("amazon_item_key", "parent_asin")
    if key not in ("parent_asin", "asin"):
        raise DataError(f"config.data.amazon_item_key must be parent_asin or asin, got {key!r}")
    buf = base.InteractionBuffer(reviews_path, data_config.min_rating)
    for line_no, r in _records(reviews_path, ("user_id", key, "rating", "timestamp")):
        rating = base.parse_number(str(r["rating"]), float, "rating", reviews_path, line_no, 0)
        ts = base.parse_number(str(r["timestamp"]), int, "timestamp", reviews_path, line_no, 0)
        user = _id(r, "user_id", reviews_path, line_no)
        buf.add(user, _id(r, key, reviews_path, line_no), rating, ts, line_no)
    wanted = set(buf.items)
    meta = base.ItemTable(meta_path)
    for line_no, record in _records(meta_path, ("parent_asin",)):
        raw_id = _id(record, "parent_asin", meta_path, line_no)
        if raw_id in wanted:
            meta.add(raw_id, meta_to_item(raw_id, record, data_config.category), line_no)
    meta.warn()
    return buf.finish(meta, str(meta_path))
